// The package as an operator meets it: `npm pack` (its prepack builds the prebuilt engine and
// dist/), then `npm install -g` of the tarball into a temporary prefix with a PATH that holds
// node and sh and nothing else (no python3, make or g++). The installed
// `relay` must report the prebuilt native plane, `relayctl --help` must work, and `relay demo`
// must carry a request through the tunnel. The package bundles its runtime dependencies
// (bundleDependencies), so the install needs no registry: it runs --offline with the registry set
// to a closed loopback port, and would fail if it asked one for anything.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const npmCli = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');
/** Nothing listens on the discard port of loopback: a registry request there fails at once. */
const NO_REGISTRY = 'http://127.0.0.1:9/';
/** Packing builds everything once more (tsc and the engine) on a machine shared with other tests. */
const STEP_MS = 300_000;

interface Ran {
  code: number | null;
  out: string;
}

function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<Ran> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), STEP_MS);
    child.on('error', fail);
    child.on('close', (code) => {
      clearTimeout(timer);
      done({ code, out });
    });
  });
}

describe('the npm package', { timeout: 3 * STEP_MS }, () => {
  let work = '';
  let prefix = '';
  let pathDir = '';
  let installLog = '';
  /** The environment of a machine with node and nothing to compile with. */
  let bare: NodeJS.ProcessEnv = {};

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'relay-package-'));
    // Packed from a copy of the source tree, so the build it runs leaves this tree's dist/ and
    // native/build/ (which the other tests are using) alone.
    const source = join(work, 'source');
    await mkdir(source);
    for (const entry of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.api.json', 'LICENSE', 'README.md', 'bin', 'src', 'test', 'bench', 'schema', 'examples', 'docs', 'deploy', 'scripts']) {
      if (existsSync(join(root, entry))) await cp(join(root, entry), join(source, entry), { recursive: true });
    }
    await cp(join(root, 'native'), join(source, 'native'), { recursive: true, filter: (from) => !/[/\\](build|prebuilds)$/.test(from) });
    await symlink(join(root, 'node_modules'), join(source, 'node_modules'));
    const packed = await run(process.execPath, [npmCli, 'pack', '--pack-destination', work], { cwd: source, env: { ...process.env, npm_config_registry: NO_REGISTRY } });
    assert.equal(packed.code, 0, packed.out);
    const tarball = (await readdir(work)).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball, `no tarball in ${work}: ${packed.out}`);

    pathDir = join(work, 'path');
    await mkdir(pathDir);
    await symlink(process.execPath, join(pathDir, 'node'));
    await symlink('/bin/sh', join(pathDir, 'sh'));
    prefix = join(work, 'prefix');
    // A fresh install picks its own data plane: a suite run with RELAY_DATA_PLANE=js must not choose it here.
    const { PATH: _path, RELAY_DATA_PLANE: _plane, ...rest } = process.env;
    bare = { ...rest, PATH: pathDir, npm_config_prefix: prefix, npm_config_registry: NO_REGISTRY, RELAY_LOG_FORMAT: 'json' };
    for (const key of Object.keys(bare)) if (/^npm_(lifecycle|package|config_node_gyp|config_cache)/.test(key)) delete bare[key];
    // An empty cache: what the install needs must come from the tarball itself.
    bare.npm_config_cache = join(work, 'npm-cache');
    const installed = await run(process.execPath, [npmCli, 'install', '--global', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', join(work, tarball)], { cwd: work, env: bare });
    installLog = installed.out;
    assert.equal(installed.code, 0, installed.out);
  });

  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('installs with no compiler on PATH and loads the prebuilt native engine', async () => {
    // The V8 helper can only be built from source: its failure shows the PATH really had no compiler.
    assert.match(installLog, /the V8 memory helper \(native\/v8-memory\) was not built/, installLog);
    assert.match(installLog, /using the prebuilt native engine/, installLog);
    const packageDir = join(prefix, 'lib', 'node_modules', '@relay-tunnel', 'relay');
    assert.equal(existsSync(join(packageDir, 'native', 'build', 'Release', 'relay_splice.node')), false, 'built from source, not prebuilt');
    assert.equal(existsSync(join(packageDir, 'test')), false, 'tests are not shipped');
    assert.equal(existsSync(join(packageDir, 'dist', 'test')), false, 'compiled tests are not shipped');
    assert.ok(existsSync(join(packageDir, 'LICENSE')));
    const version = await run(join(prefix, 'bin', 'relay'), ['--version'], { cwd: work, env: bare });
    assert.equal(version.code, 0, version.out);
    assert.match(version.out, /^relay \d+\.\d+\.\d+\nprotocol \d+\ndata plane splice \(.*native\/prebuilds\/linux-x64\/[^)]+\.node\)\n$/);
  });

  it('relayctl --help works from the installed package', async () => {
    const help = await run(join(prefix, 'bin', 'relayctl'), ['--help'], { cwd: work, env: bare });
    assert.equal(help.code, 0, help.out);
    assert.match(help.out, /relayctl add/);
  });

  it('relay demo starts from the installed package and carries a request', async () => {
    const demo = spawn(join(prefix, 'bin', 'relay'), ['demo'], { cwd: work, env: bare, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const port = await new Promise<number>((found, fail) => {
      demo.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /curl http:\/\/127\.0\.0\.1:(\d+)\//.exec(out);
        if (m) found(Number(m[1]));
      });
      demo.stderr.on('data', (d: Buffer) => (out += d.toString()));
      demo.on('exit', (code) => fail(new Error(`relay demo exited with ${code}: ${out}`)));
    });
    const body = await new Promise<string>((done, fail) => {
      http
        .get({ host: '127.0.0.1', port, path: '/installed' }, (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (t: string) => (text += t));
          res.on('end', () => done(text));
        })
        .on('error', fail);
    });
    assert.match(body, /hello from the service behind the gray: you asked for GET \/installed/);
    const exited = new Promise<number | null>((done) => demo.once('exit', (code) => done(code)));
    demo.kill('SIGINT');
    assert.equal(await exited, 0, out);
  });
});
