// End to end, real `relay white` and `relay gray` processes on loopback: one gray with two
// services (an echo service and one that answers with the digest of what it got), 100 concurrent
// clients on each port each getting their own service's bytes; an allow-list refusing a client
// bound to 127.0.0.2 and serving one from 127.0.0.1; the gray's file edited while a 100 MB
// transfer runs (a service added to both files serves with the gray's PID and session unchanged,
// the transfer's digest intact; a removed service refuses its new clients).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestHandler } from '../helpers/services.js';
import { echoHandler, roundTrip, startService } from '../helpers/tunnel.js';
import { tcpConnect } from '../soak/support.js';
import { freePort, runRelay, tempDir, type LogLine, type RelayProcess } from './harness.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function closedEmpty(socket: net.Socket): Promise<boolean> {
  let got = 0;
  socket.on('data', (b: Buffer) => (got += b.length));
  socket.on('error', () => {});
  if (socket.destroyed) return Promise.resolve(got === 0);
  return new Promise((resolve) => socket.once('close', () => resolve(got === 0)));
}

describe('services end to end', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let white: RelayProcess;
  let gray: RelayProcess;
  let echo: Awaited<ReturnType<typeof startService>>;
  let digest: Awaited<ReturnType<typeof startService>>;
  const ports = { control: 0, data: 0, echo: 0, web: 0, extra: 0 };
  const secret = randomBytes(32).toString('base64url');
  let grayPath = '';
  const grayFile = (services: Record<string, number>): string =>
    [`white: "127.0.0.1:${ports.control}"`, 'id: nas', `secret: "${secret}"`, 'pool: 8', 'limits: { reconnect_base_ms: 100, reconnect_max_ms: 1000 }', 'services:', ...Object.entries(services).map(([n, p]) => `  ${n}: { target: "127.0.0.1:${p}" }`), ''].join('\n');
  const whiteFile = (extra: boolean): string =>
    [
      `control: { listen: "127.0.0.1:${ports.control}" }`,
      'bind: "127.0.0.1"',
      'admin: { socket: null }',
      'grays:',
      '  - id: nas',
      `    secret: "${secret}"`,
      `    data_port: ${ports.data}`,
      '    services:',
      `      - { name: echo, public_port: ${ports.echo} }`,
      `      - { name: web, public_port: ${ports.web}, allow: ["127.0.0.1/32"] }`,
      ...(extra ? [`      - { name: extra, public_port: ${ports.extra} }`] : []),
      '',
    ].join('\n');

  before(async () => {
    dir = await tempDir();
    echo = await startService(echoHandler);
    digest = await startService(digestHandler);
    for (const k of Object.keys(ports) as Array<keyof typeof ports>) ports[k] = await freePort();
    const whitePath = join(dir.path, 'white.yaml');
    grayPath = join(dir.path, 'gray.yaml');
    await writeFile(whitePath, whiteFile(false), { mode: 0o600 });
    await writeFile(grayPath, grayFile({ echo: echo.port, web: digest.port }), { mode: 0o600 });
    white = runRelay(['white', '--config', whitePath]);
    await white.waitForMsg('listening');
    gray = runRelay(['gray', '--config', grayPath]);
    await gray.waitForMsg('pool ready');
  });

  after(async () => {
    await gray?.kill('SIGTERM');
    await white?.kill('SIGTERM');
    echo?.server.close();
    digest?.server.close();
    await dir?.cleanup();
  });

  it('100 concurrent clients on each of two ports each get their own service (SHA-256)', async () => {
    const one = async (i: number): Promise<boolean> => {
      const payload = randomBytes(8192 + i);
      if (i % 2 === 0) return sha(await roundTrip(ports.echo, payload)) === sha(payload);
      return (await roundTrip(ports.web, payload)).toString() === `B:${sha(payload)}`;
    };
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => one(i)));
    assert.equal(results.filter((ok) => ok).length, 200);
  });

  it('an allow-list refuses a client from 127.0.0.2 and serves one from 127.0.0.1 on the same port', async () => {
    const mark = white.lines.length;
    const refused = await tcpConnect(ports.web, '127.0.0.2');
    assert.equal(await closedEmpty(refused), true);
    await white.waitFor((l: LogLine) => white.lines.indexOf(l) >= mark && l.code === 'RELAY_ERR_CLIENT_NOT_ALLOWED' && l.service === 'web', 'the refusal in the white log');
    const payload = randomBytes(1000);
    assert.equal((await roundTrip(ports.web, payload)).toString(), `B:${sha(payload)}`);
  });

  it('the gray file reloaded during a 100 MB transfer: a new service serves, the PID and session stay, the digest matches; a removed one refuses new clients', async () => {
    const pid = gray.child.pid;
    const sessionsBefore = gray.lines.filter((l) => l.msg === 'gray connected').length;
    const hash = createHash('sha256');
    const socket = net.connect({ host: '127.0.0.1', port: ports.web, allowHalfOpen: true });
    const answered = new Promise<string>((resolve, reject) => {
      const got: Buffer[] = [];
      socket.on('data', (b: Buffer) => got.push(b));
      socket.once('end', () => resolve(Buffer.concat(got).toString()));
      socket.once('error', reject);
    });
    let halfway!: () => void;
    const progressed = new Promise<void>((resolve) => (halfway = resolve));
    const sent = new Promise<string>((resolve) => {
      socket.once('connect', () => {
        let left = 100 * 1024 * 1024;
        const pump = (): void => {
          while (left > 0) {
            const chunk = randomBytes(Math.min(left, 1024 * 1024));
            left -= chunk.length;
            hash.update(chunk);
            if (left < 50 * 1024 * 1024) halfway();
            if (!socket.write(chunk)) return void socket.once('drain', pump);
          }
          socket.end();
          resolve(hash.digest('hex'));
        };
        pump();
      });
    });
    await progressed;
    const whiteMark = white.lines.length;
    await writeFile(join(grayPath, '..', 'white.yaml'), whiteFile(true));
    await white.waitFor((l) => white.lines.indexOf(l) >= whiteMark && l.msg === 'config reloaded', 'the white to reload');
    const grayMark = gray.lines.length;
    await writeFile(grayPath, grayFile({ echo: echo.port, web: digest.port, extra: echo.port }));
    await gray.waitFor((l) => gray.lines.indexOf(l) >= grayMark && l.msg === 'config reloaded', 'the gray to reload');
    await white.waitFor((l) => white.lines.indexOf(l) >= whiteMark && l.msg === 'gray services' && Array.isArray(l.services) && (l.services as string[]).includes('extra'), 'the white to hear of extra');
    assert.equal((await roundTrip(ports.extra, Buffer.from('added'))).toString(), 'added');
    assert.equal(await answered, `B:${await sent}`, 'the 100 MB transfer is intact');
    assert.equal(gray.child.pid, pid);
    assert.equal(gray.child.exitCode, null);
    assert.equal(gray.lines.filter((l) => l.msg === 'gray connected').length, sessionsBefore, 'no new session');

    // extra leaves the gray's file: its new clients are refused.
    const mark2 = white.lines.length;
    await writeFile(grayPath, grayFile({ echo: echo.port, web: digest.port }));
    await white.waitFor((l) => white.lines.indexOf(l) >= mark2 && l.msg === 'gray services' && Array.isArray(l.services) && !(l.services as string[]).includes('extra'), 'the white to hear extra is gone');
    const refused = await tcpConnect(ports.extra);
    assert.equal(await closedEmpty(refused), true);
    await white.waitFor((l) => white.lines.indexOf(l) >= mark2 && l.code === 'RELAY_ERR_SERVICE_NOT_ON_GRAY' && l.service === 'extra' && l.msg === 'connection refused', 'the refusal logged');
  });
});
