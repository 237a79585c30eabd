// The package as an operator meets it: `npm pack` (its prepack builds the prebuilt engine and
// dist/), then `npm install -g` of the tarball into a temporary prefix with a PATH that holds
// node and sh and nothing else (no python3, make or g++). The installed
// `relay` must report the prebuilt native plane, `relayctl --help` must work, and `relay demo`
// must carry a request through the tunnel. The package bundles its runtime dependencies
// (bundleDependencies), so the install needs no registry: it runs --offline with the registry set
// to a closed loopback port, and would fail if it asked one for anything.
// The same tarball is then installed into a temporary project, as a program that embeds relay
// would use it: imported by its package name from ESM (src/api.ts through the `exports` map), and
// its type declarations checked by tsc as that project sees them.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
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
  let tarballPath = '';
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
    tarballPath = join(work, tarball);
    const installed = await run(process.execPath, [npmCli, 'install', '--global', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', tarballPath], { cwd: work, env: bare });
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
  it('a program imports it by its package name, runs a white and a gray, and type-checks against its declarations', async () => {
    const packageDir = join(prefix, 'lib', 'node_modules', '@relay-tunnel', 'relay');
    assert.ok(existsSync(join(packageDir, 'dist', 'src', 'api.d.ts')), 'the declarations are in the tarball');
    const project = join(work, 'embedder');
    await mkdir(project);
    await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'embedder', private: true, type: 'module' }));
    const installed = await run(process.execPath, [npmCli, 'install', '--offline', '--no-audit', '--no-fund', tarballPath], { cwd: project, env: bare });
    assert.equal(installed.code, 0, installed.out);
    await writeFile(join(project, 'app.mjs'), EMBEDDING_PROGRAM);
    const secret = randomBytes(32).toString('base64url');
    const ran = await run(join(pathDir, 'node'), ['app.mjs'], { cwd: project, env: { ...bare, EMBED_SECRET: secret } });
    assert.equal(ran.code, 0, ran.out);
    const result = JSON.parse(ran.out.trim().split('\n').at(-1)!) as EmbeddingResult;
    assert.equal(result.version, JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version);
    assert.equal(result.badConfig, 'RelayError RELAY_ERR_CONFIG_INVALID');
    assert.equal(result.deepImport, 'ERR_PACKAGE_PATH_NOT_EXPORTED');
    for (const id of ['object', 'file']) {
      const gray = result.grays[id]!;
      assert.equal(gray.echoed, true, `${id}: the bytes came back through the tunnel`);
      assert.equal(gray.whiteSide.connected, true);
      assert.equal(gray.whiteSide.clientsTotal, 1);
      assert.equal(gray.whiteSide.bytesFromClients, PAYLOAD_BYTES);
      assert.ok(gray.whiteSide.publicPort > 0, 'port 0 got a port from the OS');
      assert.equal(gray.graySide.ready, true);
      assert.equal(gray.graySide.whites, 1);
      assert.equal(gray.graySide.dataPlane, 'splice');
    }
    assert.deepEqual(result.afterStop, { whiteGrays: 0, grayReady: false, readyAfterStop: 'RELAY_ERR_SHUTDOWN' });

    // The declarations as a TypeScript user meets them: strict, NodeNext, and no skipLibCheck.
    await writeFile(join(project, 'use.ts'), TYPED_USE);
    await writeFile(join(project, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', noEmit: true, skipLibCheck: false, types: ['node'] }, files: ['use.ts'] }));
    await mkdir(join(project, 'node_modules', '@types'), { recursive: true });
    await symlink(join(root, 'node_modules', '@types', 'node'), join(project, 'node_modules', '@types', 'node'));
    const checked = await run(join(pathDir, 'node'), [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project], { cwd: project, env: bare });
    assert.equal(checked.code, 0, checked.out);
  });
});

const PAYLOAD_BYTES = 256 * 1024;

interface EmbeddingResult {
  version: string;
  badConfig: string;
  deepImport: string;
  grays: Record<string, { echoed: boolean; whiteSide: { connected: boolean; clientsTotal: number; bytesFromClients: number; publicPort: number }; graySide: { ready: boolean; whites: number; dataPlane: string } }>;
  afterStop: { whiteGrays: number; grayReady: boolean; readyAfterStop: string };
}

/** The embedding program: a white from an object, one gray from an object and one from a file,
 *  an echo service behind both; prints one JSON line of what it saw. */
const EMBEDDING_PROGRAM = `
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { startWhite, startGray, RelayError, VERSION } from '@relay-tunnel/relay';

const secret = process.env.EMBED_SECRET;
const echo = net.createServer((socket) => socket.pipe(socket));
await new Promise((listening) => echo.listen(0, '127.0.0.1', listening));
const target = '127.0.0.1:' + echo.address().port;

let badConfig = 'accepted';
await startWhite({ control: { listen: 'nowhere' } }).catch((err) => (badConfig = (err instanceof RelayError ? 'RelayError ' : 'Error ') + err.code));
let deepImport = 'imported';
await import('@relay-tunnel/relay/dist/src/engine/white/white-server.js').catch((err) => (deepImport = err.code));

const white = await startWhite({
  control: { listen: '127.0.0.1:0' },
  bind: '127.0.0.1',
  admin: { socket: null },
  log: { level: 'warn' },
  grays: [
    { id: 'object', secret_env: 'EMBED_SECRET', public_port: 0, data_port: 0 },
    { id: 'file', secret_env: 'EMBED_SECRET', public_port: 0, data_port: 0 },
  ],
});
const fromObject = await startGray({ white: '127.0.0.1:' + white.controlPort, id: 'object', secret, target, pool: 2, log: { level: 'warn' } });
await writeFile('gray.yaml', ['white: "127.0.0.1:' + white.controlPort + '"', 'id: file', 'secret_env: EMBED_SECRET', 'target: "' + target + '"', 'pool: 2', 'log: { level: warn }', ''].join('\\n'));
const fromFile = await startGray('gray.yaml');
const running = { object: fromObject, file: fromFile };

const grays = {};
for (const [id, gray] of Object.entries(running)) {
  await gray.ready();
  const publicPort = white.state().grays.find((g) => g.id === id).publicPort;
  const payload = randomBytes(${256 * 1024});
  const back = await new Promise((done, fail) => {
    const chunks = [];
    const client = net.connect(publicPort, '127.0.0.1', () => client.end(payload));
    client.on('data', (chunk) => chunks.push(chunk));
    client.on('end', () => done(Buffer.concat(chunks)));
    client.on('error', fail);
  });
  // The splice plane counts a pair's bytes when it ends, a moment after the client saw the end:
  // the state is read again until the white has no active client (bounded).
  const settled = Date.now() + 5000;
  while (white.state().grays.find((g) => g.id === id).activeClients > 0 && Date.now() < settled) await new Promise((tick) => setTimeout(tick, 10));
  const w = white.state().grays.find((g) => g.id === id);
  const g = gray.state();
  grays[id] = {
    echoed: back.equals(payload),
    whiteSide: { connected: w.connected, clientsTotal: w.clientsTotal, bytesFromClients: w.bytesFromClients, publicPort: w.publicPort },
    graySide: { ready: g.ready, whites: g.whites.length, dataPlane: g.dataPlane },
  };
}
await fromObject.stop();
await fromFile.stop();
await white.stop();
const readyAfterStop = await fromObject.ready().then(() => 'resolved', (err) => err.code);
const afterStop = { whiteGrays: white.state().grays.length, grayReady: fromObject.state().ready, readyAfterStop };
echo.close();
console.log(JSON.stringify({ version: VERSION, badConfig, deepImport, grays, afterStop }));
`;

/** Uses of the declarations that must compile, and misuses that must not (each @ts-expect-error
 *  fails the check if the types let it through). */
const TYPED_USE = `
import { startWhite, startGray, whiteConfigFromObject, loadGrayConfig, RelayError, ErrorCodes, type WhiteConfigInput, type GrayConfigInput, type RunningWhite, type GrayState, type WhiteState } from '@relay-tunnel/relay';

const white: WhiteConfigInput = {
  control: { listen: '127.0.0.1:0' },
  admin: { socket: null },
  grays: [{ id: 'a', secret_env: 'S', public_port: 0, data_port: 0, idle_timeout_ms: null }],
  hooks: [{ url: 'http://127.0.0.1:9/hook', events: ['gray.connected'] }],
  limits: { client_wait_ms: 5000 },
};
const gray: GrayConfigInput = { white: ['127.0.0.1:7000'], id: 'a', secret_env: 'S', target: '127.0.0.1:8080', proxy_protocol: 'v2' };
// @ts-expect-error: the control address is control.listen
const noListen: WhiteConfigInput = { control: { port: 7000 } };
// @ts-expect-error: limits are written in snake_case
const camelLimit: WhiteConfigInput = { control: { listen: '127.0.0.1:0' }, limits: { clientWaitMs: 5 } };
// @ts-expect-error: an event name the white does not emit
const badEvent: WhiteConfigInput = { control: { listen: '127.0.0.1:0' }, hooks: [{ url: 'http://127.0.0.1:9/', events: ['gray.exploded'] }] };

export async function main(): Promise<void> {
  const running: RunningWhite = await startWhite(await whiteConfigFromObject(white), { logTo: process.stderr });
  const controlPort: number = running.controlPort;
  const metricsPort: number | undefined = running.listening.metrics?.port;
  const statusPort: number | undefined = (await startGray(gray)).statusAddress?.port;
  const state: WhiteState = running.state();
  const publicPort: number | undefined = state.grays[0]?.publicPort;
  const g = await startGray(await loadGrayConfig('gray.yaml'));
  await g.ready();
  const gs: GrayState = g.state();
  const idle: number | undefined = gs.whites[0]?.poolIdle;
  // @ts-expect-error: stop takes milliseconds
  await g.stop('soon');
  // @ts-expect-error: a gray config is not a white one
  await startWhite(gray);
  await running.stop(1000);
  try {
    await startGray(gray);
  } catch (err) {
    if (err instanceof RelayError && err.code === ErrorCodes.CONFIG_INVALID) console.log(controlPort, metricsPort, statusPort, publicPort, idle, err.details);
  }
}
`;

