// Per-host settings on `relay white`'s command line: two hosts' worth of addresses from one shared
// file, kept across a hot reload; a bad flag is a usage error naming it. Real processes on
// 127.0.0.0/8; every wait is for a log line, an exit or a socket event.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { lstat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { request } from 'undici';
import { roundTrip, startService } from '../helpers/tunnel.js';
import { freePort, runRelay, runRelayToEnd, tempDir, type LogLine } from './harness.js';

function connects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    // A white refuses a client of an offline gray with a reset, which may come before Node
    // reports the connect: something listened there. Nothing listening is ECONNREFUSED.
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNRESET'));
  });
}

describe('relay white per-host flags', () => {
  it('--bind, --control-listen, --admin-socket and --metrics-listen override the file, across reloads', async () => {
    const dir = await tempDir();
    const service = await startService();
    const secret = randomBytes(32).toString('base64url');
    // The file's addresses are 127.0.0.1; the flags move this white to 127.0.0.2.
    const ports: number[] = [];
    while (ports.length < 6) {
      const p = await freePort();
      if (!ports.includes(p)) ports.push(p);
    }
    const [control, publicPort, dataPort, metrics, public2, data2] = ports as [number, number, number, number, number, number];
    const whitePath = join(dir.path, 'white.yaml');
    const file = (extra: string): string =>
      [
        `control: { listen: "127.0.0.1:${control}" }`,
        `bind: "127.0.0.1"`,
        `admin: { socket: "./from-file.sock" }`,
        `grays:`,
        `  - { id: g1, secret: "${secret}", public_port: ${publicPort}, data_port: ${dataPort} }`,
        extra,
        '',
      ].join('\n');
    await writeFile(whitePath, file(''));
    const socket = join(dir.path, 'w2.sock');
    const white = runRelay(['white', '--config', whitePath, '--no-console', '--bind', '127.0.0.2', '--control-listen', `127.0.0.2:${control}`, '--admin-socket', socket, '--metrics-listen', `127.0.0.2:${metrics}`]);
    const grayPath = join(dir.path, 'gray.yaml');
    await writeFile(grayPath, [`white: "127.0.0.2:${control}"`, 'id: g1', `secret: "${secret}"`, `target: "127.0.0.1:${service.port}"`, 'pool: 2', ''].join('\n'));
    const gray = runRelay(['gray', '--config', grayPath]);
    try {
      const listening = await white.waitForMsg('listening');
      assert.equal(listening.control, `127.0.0.2:${control}`);
      const admin = await white.waitForMsg('admin listening');
      assert.equal(admin.socket, socket);
      assert.ok((await lstat(socket)).isSocket());
      await gray.waitForMsg('pool ready');
      assert.equal((await roundTrip(publicPort, Buffer.from('via 127.0.0.2'), '127.0.0.2')).toString(), 'via 127.0.0.2');
      assert.equal(await connects('127.0.0.1', publicPort), false, 'the file\'s bind address is not used');
      const ready = await request(`http://127.0.0.2:${metrics}/readyz/gray/g1`);
      assert.equal(ready.statusCode, 200);
      await ready.body.text();

      // A hot reload adds a gray: its ports go on the flag's address, the control port stays.
      const mark = white.lines.length;
      await writeFile(whitePath, file(`  - { id: g2, secret: "${randomBytes(32).toString('base64url')}", public_port: ${public2}, data_port: ${data2} }`));
      await white.waitFor((l: LogLine) => white.lines.indexOf(l) >= mark && l.msg === 'config reloaded', 'the reload');
      assert.equal(await connects('127.0.0.2', public2), true);
      assert.equal(await connects('127.0.0.1', public2), false);
      assert.equal(await connects('127.0.0.2', control), true);
      assert.equal(await connects('127.0.0.1', control), false);
      assert.ok(!white.lines.some((l) => l.msg === 'config reload failed while applying' || l.msg === 'config rejected; the running config stays'));
    } finally {
      await gray.kill('SIGTERM');
      await white.kill('SIGTERM');
      service.server.close();
      await dir.cleanup();
    }
  });

  it('a bad flag value is a usage error naming the flag; the flags are for relay white only', async () => {
    const bad = await runRelayToEnd(['white', '--config', 'nowhere.yaml', '--control-listen', '127.0.0.2']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--control-listen "127\.0\.0\.2" has no port/);
    const badBind = await runRelayToEnd(['white', '--config', 'nowhere.yaml', '--bind', '1.2.3']);
    assert.equal(badBind.code, 2);
    assert.match(badBind.stderr, /--bind "1\.2\.3" is not a valid IPv4 address/);
    const gray = await runRelayToEnd(['gray', '--config', 'nowhere.yaml', '--bind', '127.0.0.2']);
    assert.equal(gray.code, 2);
    assert.match(gray.stderr, /for relay white only/);
    const help = await runRelayToEnd(['white', '--help']);
    for (const flag of ['--bind', '--control-listen', '--admin-socket', '--metrics-listen']) assert.ok(help.stdout.includes(flag), flag);
  });
});
