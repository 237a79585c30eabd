// Failover with real processes: three whites from one file on 127.0.1.1-3, one gray with a session
// to each, HAProxy on 127.0.0.1 in front of the public port checking /readyz/gray/<id>. Under a
// steady, bounded load of new clients one white is killed with SIGKILL: only clients in flight on
// it may fail; every client started after the kill is served. Restarted, the white is rejoined by
// the gray within the backoff bound and takes traffic again.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startService } from '../helpers/tunnel.js';
import { runRelay, tempDir, type LogLine, type RelayProcess } from './harness.js';
import { distinctPorts, haproxyBinary, sharedWhiteFile, startHaproxy, startWhiteOn, until, type SharedPorts } from './ha-harness.js';

const WHITES = ['127.0.1.1', '127.0.1.2', '127.0.1.3'];
const KILLED = 1; // 127.0.1.2, haproxy's w2
const RECONNECT_MAX_MS = 1000;
/** A client is started every this many ms... */
const CLIENT_EVERY_MS = 12;
/** ...and holds its connection this long between its two messages: many are in flight at once. */
const HOLD_MS = 250;
const CLIENT_TIMEOUT_MS = 15_000;

interface ClientResult {
  readonly n: number;
  readonly startedAt: number;
  clientPort: number;
  ok: boolean;
  error: string | null;
}

/** One client: hello, wait for its echo, hold, bye, expect the whole echo and the close. */
function oneClient(n: number, port: number): Promise<ClientResult> {
  const result: ClientResult = { n, startedAt: Date.now(), clientPort: 0, ok: false, error: null };
  return new Promise((resolve) => {
    const hello = `hello ${n}\n`;
    const bye = `bye ${n}\n`;
    let got = '';
    let finished = false;
    const done = (ok: boolean, error: string | null): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      clearTimeout(holdTimer);
      result.ok = ok;
      result.error = error;
      socket.destroy();
      resolve(result);
    };
    let holdTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => done(false, 'timeout'), CLIENT_TIMEOUT_MS);
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => {
      result.clientPort = socket.localPort ?? 0;
      socket.write(hello);
    });
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      got += text;
      if (got === hello) holdTimer = setTimeout(() => socket.end(bye), HOLD_MS);
    });
    socket.on('end', () => done(got === hello + bye, got === hello + bye ? null : `closed after ${JSON.stringify(got)}`));
    socket.on('error', (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message));
    socket.on('close', () => done(got === hello + bye, got === hello + bye ? null : `closed after ${JSON.stringify(got)}`));
  });
}

function since(proc: RelayProcess, mark: number, match: (l: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine> {
  return proc.waitFor((l) => proc.lines.indexOf(l) >= mark && match(l), what, timeoutMs);
}

describe('failover behind HAProxy', () => {
  it('kill -9 of one of three whites under load fails only the clients in flight on it; it is rejoined and serves again', async (t) => {
    haproxyBinary(); // fails here, with the reason, when haproxy is missing
    const dir = await tempDir();
    const service = await startService();
    const secret = randomBytes(32).toString('base64url');
    const [control, publicPort, dataPort, metrics] = (await distinctPorts(4)) as [number, number, number, number];
    const ports: SharedPorts = { control, publicPort, dataPort, metrics };
    const whitePath = join(dir.path, 'white.yaml');
    await writeFile(whitePath, sharedWhiteFile(ports, [{ id: 'g1', secret }]));
    const socketOf = (i: number): string => join(dir.path, `w${i + 1}.sock`);
    const whites: RelayProcess[] = WHITES.map((host, i) => startWhiteOn(host, whitePath, ports, socketOf(i)));
    const grayPath = join(dir.path, 'gray.yaml');
    await writeFile(
      grayPath,
      [
        `white: [${WHITES.map((h) => `"${h}:${control}"`).join(', ')}]`,
        'id: g1',
        `secret: "${secret}"`,
        `target: "127.0.0.1:${service.port}"`,
        'pool: 16',
        `limits: { reconnect_base_ms: 100, reconnect_max_ms: ${RECONNECT_MAX_MS} }`,
        '',
      ].join('\n'),
    );
    let gray: RelayProcess | null = null;
    let haproxy: Awaited<ReturnType<typeof startHaproxy>> | null = null;
    try {
      await Promise.all(whites.map((w) => w.waitForMsg('admin listening', 60_000)));
      gray = runRelay(['gray', '--config', grayPath]);
      const g = gray;
      await Promise.all(WHITES.map((h) => g.waitFor((l) => l.msg === 'pool ready' && l.white === `${h}:${control}`, `pool ready with ${h}`)));
      haproxy = await startHaproxy(dir.path, WHITES, ports, 'g1');
      const hp = haproxy;
      await until(async () => (await hp.upCount()) === 3, 'haproxy to see three ready whites', 15_000);

      // Steady load: a new client every CLIENT_EVERY_MS until told to stop, bounded in count.
      const results: Array<Promise<ClientResult>> = [];
      let stopLoad = false;
      const loadDone = (async () => {
        for (let n = 0; n < 3000 && !stopLoad; n++) {
          results.push(oneClient(n, hp.port));
          await new Promise((r) => setTimeout(r, CLIENT_EVERY_MS));
        }
      })();
      const waitClients = (count: number): Promise<void> => until(() => results.length >= count, `${count} clients started`, 30_000, 10);

      await waitClients(120);
      const victim = whites[KILLED]!;
      const signalledAt = Date.now();
      // The kill takes effect when the process is gone: until then the kernel still completes
      // connections into its listen backlog, and those clients are in flight on it.
      await victim.kill('SIGKILL');
      const killedAt = Date.now();
      await until(async () => (await hp.upCount()) === 2, 'haproxy to take the killed white out', 10_000);
      await waitClients(results.length + 120);

      // Restart: the gray rejoins it within its backoff bound; haproxy sends it clients again.
      const restarted = startWhiteOn(WHITES[KILLED]!, whitePath, ports, socketOf(KILLED));
      whites[KILLED] = restarted;
      const listening = await restarted.waitForMsg('listening', 60_000);
      const listeningAt = Date.now();
      const mark = g.lines.length;
      await since(g, mark, (l) => l.msg === 'pool ready' && l.white === `${WHITES[KILLED]}:${control}`, 'the gray to rejoin the restarted white', 15_000);
      const rejoinMs = Date.now() - listeningAt;
      await until(async () => (await hp.upCount()) === 3, 'haproxy to see the restarted white ready', 10_000);
      const backUpAt = Date.now();
      await waitClients(results.length + 200);
      stopLoad = true;
      await loadDone;
      const all = await Promise.all(results);
      // Every session is in haproxy's log once it has ended.
      await until(() => hp.sessions.length >= all.filter((r) => r.clientPort !== 0).length, 'haproxy to log every session', 10_000).catch((err: Error) => {
        const connected = all.filter((r) => r.clientPort !== 0);
        const logged = new Set(hp.sessions.map((x) => x.clientPort));
        const missing = connected.filter((r) => !logged.has(r.clientPort));
        throw new Error(`${err.message}: ${hp.sessions.length} logged of ${connected.length}; missing ${missing.length}: ${JSON.stringify(missing.slice(0, 5))}; other haproxy output: ${hp.stderr.slice(-5).join(' | ')}`);
      });

      // A client port can come back: a reset connection leaves no TIME_WAIT behind. Sessions with
      // one port are one after the other, and logged in that order: pair them up in order.
      const byPort = new Map<number, Array<(typeof hp.sessions)[number]>>();
      for (const s of hp.sessions) byPort.set(s.clientPort, [...(byPort.get(s.clientPort) ?? []), s]);
      const serverOfClient = new Map<ClientResult, (typeof hp.sessions)[number]>();
      for (const r of [...all].sort((x, y) => x.startedAt - y.startedAt)) {
        const next = byPort.get(r.clientPort)?.shift();
        if (next) serverOfClient.set(r, next);
      }
      const serverOf = { get: (r: ClientResult) => serverOfClient.get(r) };
      const failed = all.filter((r) => !r.ok);
      const killedName = `w${KILLED + 1}`;
      const inFlightOnKilled = failed.filter((r) => r.startedAt <= killedAt && serverOf.get(r)?.server === killedName);
      const servedByRestarted = all.filter((r) => r.ok && r.startedAt >= backUpAt && serverOf.get(r)?.server === killedName).length;
      const retried = hp.sessions.filter((s) => s.retries > 0).length;
      const figures = {
        started: all.length,
        served: all.filter((r) => r.ok).length,
        failed: failed.length,
        failedInFlightOnKilled: inFlightOnKilled.length,
        retriedByHaproxy: retried,
        msFromSignalToExit: killedAt - signalledAt,
        rejoinMsAfterListening: rejoinMs,
        servedByRestartedWhite: servedByRestarted,
      };
      t.diagnostic(`failover figures: ${JSON.stringify(figures)}`);
      for (const r of failed) {
        const s = serverOf.get(r);
        t.diagnostic(`failed client ${r.n}: started ${r.startedAt - killedAt} ms from the kill, ${r.error}, haproxy ${s ? `${s.server} ${s.state} retries ${s.retries}` : 'no log'}`);
      }
      process.stdout.write(`failover figures: ${JSON.stringify(figures)}\n`);
      assert.equal(typeof listening.control, 'string');

      for (const r of failed) {
        const s = serverOf.get(r);
        assert.ok(r.startedAt <= killedAt, `client ${r.n} started ${r.startedAt - killedAt} ms after the kill and failed (${r.error}, server ${s?.server ?? '?'})`);
        assert.equal(s?.server, killedName, `client ${r.n} failed (${r.error}) on ${s?.server ?? 'no server'}, not on the killed white`);
      }
      assert.equal(failed.length, inFlightOnKilled.length);
      // The backoff bound: an attempt at most every reconnect_max_ms, plus one TLS login and pool fill.
      assert.ok(rejoinMs <= RECONNECT_MAX_MS + 3000, `rejoined ${rejoinMs} ms after the white listened`);
      assert.ok(servedByRestarted > 0, 'the restarted white takes clients again');
      assert.ok(all.length - failed.length >= 400);
    } finally {
      await haproxy?.stop();
      await gray?.kill('SIGTERM');
      await Promise.all(whites.map((w) => w.kill('SIGKILL')));
      service.server.close();
      await dir.cleanup();
    }
  });
});
