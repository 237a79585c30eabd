// Files that hold secrets, as a user meets them: `relay verify`, `relay white` and `relay gray`
// warn when a file with an inline secret is readable by group or others, naming the file, its mode
// and the keys; `relayctl add --out FILE` writes the gray's file with mode 0600 and never
// overwrites one. Real processes, real files.
import assert from 'node:assert/strict';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { generateSecret } from '../../src/config/secret.js';
import { freePort, runRelay, runRelayToEnd, tempDir, relayctl } from './harness.js';



describe('e2e: files that hold secrets', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let white: string;
  let gray: string;
  before(async () => {
    dir = await tempDir();
    white = join(dir.path, 'white.yaml');
    gray = join(dir.path, 'gray.yaml');
    const control = await freePort();
    await writeFile(
      white,
      [
        `control: { listen: "127.0.0.1:${control}" }`,
        'bind: "127.0.0.1"',
        'admin: { socket: null }',
        'grays:',
        `  - { id: a, secret: "${generateSecret()}", public_port: ${await freePort()}, data_port: ${await freePort()} }`,
        '',
      ].join('\n'),
    );
    await writeFile(gray, `white: "127.0.0.1:${control}"\nid: a\nsecret: "${generateSecret()}"\ntarget: "127.0.0.1:9"\n`);
  });
  after(async () => {
    await dir.cleanup();
  });

  it('relay verify warns about a group- or world-readable file with inline secrets, and not about a private one', async () => {
    await chmod(white, 0o644);
    const loose = await runRelayToEnd(['verify', '--config', white]);
    assert.equal(loose.code, 0, loose.stderr);
    assert.ok(
      loose.stderr.includes(
        `warning: ${white} holds inline secrets (grays[0].secret) and everyone can read it (mode 0644): chmod 600 ${white}, or move them to secret_file / secret_env\n`,
      ),
      loose.stderr,
    );
    await chmod(gray, 0o640);
    const group = await runRelayToEnd(['verify', '--config', gray]);
    assert.equal(group.code, 0, group.stderr);
    assert.match(group.stderr, /holds inline secrets \(secret\) and its group can read it \(mode 0640\)/);
    await chmod(white, 0o600);
    await chmod(gray, 0o600);
    for (const file of [white, gray]) {
      const tight = await runRelayToEnd(['verify', '--config', file]);
      assert.equal(tight.code, 0, tight.stderr);
      assert.doesNotMatch(tight.stderr, /inline secrets/);
    }
  });

  it('relay white and relay gray log the warning at start', async () => {
    await chmod(white, 0o604);
    await chmod(gray, 0o644);
    for (const [command, file, mode] of [
      ['white', white, '0604'],
      ['gray', gray, '0644'],
    ] as const) {
      const proc = runRelay([command, '--config', file, ...(command === 'white' ? ['--no-console'] : [])]);
      try {
        const line = await proc.waitFor((l) => typeof l.msg === 'string' && l.msg.includes('holds inline secrets'), `${command}'s warning`);
        assert.equal(line.level, 40, 'logged as a warning');
        assert.equal(line.path, file);
        assert.ok(String(line.msg).includes(`everyone can read it (mode ${mode}): chmod 600 ${file}`), String(line.msg));
      } finally {
        await proc.kill('SIGKILL');
      }
    }
    await chmod(white, 0o600);
    await chmod(gray, 0o600);
  });

  it('an admin token with spaces fails relay verify with the position, and relayctl refuses it before connecting', async () => {
    const file = join(dir.path, 'spaced.yaml');
    await writeFile(
      file,
      `control: { listen: "127.0.0.1:7000" }\nadmin:\n  socket: null\n  tcp: { listen: "127.0.0.1:${await freePort()}", token: "correct horse battery staple and more words" }\ngrays: []\n`,
      { mode: 0o600 },
    );
    const verify = await runRelayToEnd(['verify', '--config', file]);
    assert.equal(verify.code, 2);
    assert.match(verify.stderr, /admin\.tcp\.token: has a space at position 8; a token is visible ASCII characters only/);
    assert.doesNotMatch(verify.stderr, /horse/, 'the token is not shown');
    const show = await relayctl(['show', '--config', file]);
    assert.equal(show.code, 2);
    assert.match(show.stderr, /admin\.tcp\.token: has a space at position 8/);
  });

  it('relayctl add --out writes the gray\'s file with mode 0600, and refuses to overwrite one, leaving both files as they were', async () => {
    const out = join(dir.path, 'b-gray.yaml');
    const ports = ['--public-port', String(await freePort()), '--data-port', String(await freePort())];
    const run = await relayctl(['add', 'b', ...ports, '--out', out, '--white', 'white.example.com:7000', '--target', '127.0.0.1:8080', '--config', white]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, '', 'the secret does not go to stdout');
    assert.match(run.stderr, new RegExp(`wrote the gray's config to ${out} \\(mode 0600: it holds the secret\\)`));
    assert.equal((await stat(out)).mode & 0o777, 0o600);
    const written = await readFile(out, 'utf8');
    assert.match(written, /^id: "b"$/m);
    assert.match(written, /^secret: "[A-Za-z0-9_-]{43}"$/m);
    const verify = await runRelayToEnd(['verify', '--config', out]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.doesNotMatch(verify.stderr, /inline secrets/);

    const whiteBefore = await readFile(white, 'utf8');
    const again = await relayctl(['add', 'c', '--public-port', '1', '--data-port', '2', '--out', out, '--config', white]);
    assert.equal(again.code, 2);
    assert.equal(again.stderr, `relayctl: --out ${out} already exists; relayctl add never overwrites a file: pick another name or remove it first\n`);
    assert.equal(await readFile(out, 'utf8'), written, 'the existing file is untouched');
    assert.equal(await readFile(white, 'utf8'), whiteBefore, 'gray "c" was not registered');

    // A failed add (the id exists) leaves no empty --out file behind.
    const other = join(dir.path, 'dup-gray.yaml');
    const dup = await relayctl(['add', 'b', '--public-port', '1', '--data-port', '2', '--out', other, '--config', white]);
    assert.equal(dup.code, 2);
    await assert.rejects(stat(other), { code: 'ENOENT' });
  });
});
