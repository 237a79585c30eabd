// End to end: ports another program holds. Real `relay white`, `relay gray`, `relayctl` and
// `relay verify` processes on 127.0.0.1; every wait is for a log line, an exit or bytes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AdminState } from '../../src/admin/server.js';
import { ephemeralPortRange } from '../../src/config/ports.js';
import { roundTrip, startService } from '../helpers/tunnel.js';
import { freePort, RELAY_CLI, RelayProcess, runRelay, runRelayToEnd, tempDir, relayctl } from './harness.js';

const T = { timeout: 60_000 };


async function hold(port = 0): Promise<{ port: number; release: () => Promise<void> }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, release: () => new Promise<void>((r) => server.close(() => r())) };
}

function grayYaml(id: string, secret: string, controlPort: number, targetPort: number): string {
  return [`white: "127.0.0.1:${controlPort}"`, `id: ${id}`, `secret: "${secret}"`, `target: "127.0.0.1:${targetPort}"`, 'pool: 2', 'limits: { reconnect_base_ms: 100, reconnect_max_ms: 500 }', ''].join('\n');
}

describe('e2e: ports held by another program, and what a reload cannot apply', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let service: Awaited<ReturnType<typeof startService>>;
  let whitePath: string;
  let controlPort: number;
  let white: RelayProcess;
  const procs: RelayProcess[] = [];
  // rangeStart is held for the whole run, so relayctl add must skip it; blocked is the public
  // port of a configured gray, held at start and released by a test.
  let rangeStart: Awaited<ReturnType<typeof hold>>;
  let blocked: Awaited<ReturnType<typeof hold>>;
  const secret = randomBytes(32).toString('base64url');

  const startGray = async (id: string, yaml: string): Promise<RelayProcess> => {
    const path = join(dir.path, `gray-${id}.yaml`);
    await writeFile(path, yaml, { mode: 0o600 });
    const gray = runRelay(['gray', '--config', path]);
    procs.push(gray);
    return gray;
  };

  before(async () => {
    dir = await tempDir();
    service = await startService();
    whitePath = join(dir.path, 'white.yaml');
    controlPort = await freePort();
    // Ports the OS hands out for port 0 come from its ephemeral range: the overlap is real.
    rangeStart = await hold();
    blocked = await hold();
    await writeFile(
      whitePath,
      [
        `control: { listen: "127.0.0.1:${controlPort}" }`,
        'bind: "127.0.0.1"',
        'admin: { socket: "./admin.sock" }',
        `ports: { range: "${rangeStart.port}-${rangeStart.port + 20}" }`,
        'grays:',
        '  - id: blocked',
        `    secret: "${secret}"`,
        `    public_port: ${blocked.port}`,
        `    data_port: ${await freePort()}`,
        '',
      ].join('\n'),
    );
    // Without RELAY_LOG_LEVEL (runRelay sets it), so the file's log.level governs.
    const env = { ...process.env };
    delete env.RELAY_LOG_LEVEL;
    white = new RelayProcess(spawn(process.execPath, [RELAY_CLI, 'white', '--config', whitePath], { stdio: ['ignore', 'pipe', 'pipe'], env }));
    procs.push(white);
    await white.waitForMsg('admin listening');
  }, T);

  after(async () => {
    for (const p of procs) await p.kill();
    await rangeStart?.release();
    await blocked?.release().catch(() => {});
    service?.server.close();
    await dir?.cleanup();
  });

  it('the white starts with one gray\'s port taken, says why, and warns that ports.range is ephemeral', T, async () => {
    const line = await white.waitFor((l) => l.msg === 'cannot bind the ports of a gray; retrying', 'the bind failure line');
    assert.equal(line.gray, 'blocked');
    assert.match(String(line.error), /EADDRINUSE/);
    const eph = await ephemeralPortRange();
    assert.ok(eph && rangeStart.port >= eph.from && rangeStart.port <= eph.to, 'port 0 came from the ephemeral range');
    await white.waitFor((l) => typeof l.msg === 'string' && l.msg.includes('overlaps the kernel\'s ephemeral port range'), 'the ephemeral overlap warning');

    const show = await relayctl(['show', '--config', whitePath]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^blocked .*ports not bound, retrying.*EADDRINUSE/m);
    const json = JSON.parse((await relayctl(['show', '--json', '--config', whitePath])).stdout) as AdminState;
    assert.equal(json.grays[0]!.portsBound, false);

    const verify = await runRelayToEnd(['verify', '--config', whitePath]);
    assert.equal(verify.code, 0);
    assert.match(verify.stderr, /warning: ports\.range .* overlaps the kernel's ephemeral port range/);
  });

  it('the gray of the taken port is refused with PORTS_UNBOUND, and served once the port is released, without an edit', T, async () => {
    const gray = await startGray('blocked', grayYaml('blocked', secret, controlPort, service.port));
    const refused = await gray.waitFor((l) => l.msg === 'control session ended', 'the refused login');
    assert.equal(refused.code, 'RELAY_ERR_PORTS_UNBOUND');
    assert.match(String(refused.reason), /EADDRINUSE/);
    await blocked.release();
    await white.waitFor((l) => l.msg === 'ports of a gray bound' && l.gray === 'blocked', 'the retry to bind', 30_000);
    await gray.waitForMsg('pool ready');
    assert.equal((await roundTrip(blocked.port, Buffer.from('after the release'))).toString(), 'after the release');
  });

  it('relayctl add skips the held port, warns about the range, and prints once the white has the gray: a gray started at once connects', T, async () => {
    const run = await relayctl(['add', 'fresh', '--target', `127.0.0.1:${service.port}`, '--config', whitePath]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /warning: ports\.range .* overlaps the kernel's ephemeral port range/);
    const added = /public port (\d+), data port (\d+); the running white has applied it$/m.exec(run.stderr);
    assert.ok(added, run.stderr);
    const publicPort = Number(added[1]);
    assert.notEqual(publicPort, rangeStart.port);
    assert.notEqual(Number(added[2]), rangeStart.port);
    const gray = await startGray('fresh', run.stdout);
    await gray.waitForMsg('pool ready');
    assert.equal(gray.lines.filter((l) => l.msg === 'control session ended').length, 0, 'no failed login before it connected');
    assert.equal((await roundTrip(publicPort, Buffer.from('added and served'))).toString(), 'added and served');
  });

  it('relayctl reload and show name what a reload cannot apply (metrics.listen), and log.level is applied at once', T, async () => {
    const text = await readFile(whitePath, 'utf8');
    await writeFile(whitePath, `log: { level: debug }\nmetrics: { listen: "127.0.0.1:${await freePort()}" }\n${text}`);
    const reload = await relayctl(['reload', '--config', whitePath]);
    assert.equal(reload.code, 1, reload.stderr);
    assert.match(reload.stderr, /^reloaded, but not all of it is in force:\n {2}metrics\.listen: the metrics listener is bound at start; restart needed$/m);
    const warned = await white.waitFor((l) => l.msg === 'config setting not applied', 'the not-applied warning');
    assert.match(String(warned.notApplied), /^metrics\.listen: /);
    const show = await relayctl(['show', '--config', whitePath]);
    assert.match(show.stdout, /last reload +.*: applied, except:\n +metrics\.listen: the metrics listener is bound at start; restart needed/);
    // debug is in force: a client now gets its own log line.
    assert.equal((await roundTrip(blocked.port, Buffer.from('seen at debug'))).toString(), 'seen at debug');
    await white.waitFor((l) => l.msg === 'client paired' && l.gray === 'blocked', 'a debug line for the client');
  });
});
