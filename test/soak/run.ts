// `npm run soak`: the long version of test/hardening/, on loopback, bounded to a few minutes.
// Phases: a long decoder fuzz; a minute of client churn against real white/gray processes with a
// transfer running throughout; repeated faults (gray frozen and thawed, service outages, gray and
// white killed with -9 and restarted); a slow reader of a 200 MB service; idle floods (4,000 paired
// connections, then 10,000 clients queued on the public port). Prints a summary (inputs tried,
// faults survived, bytes lost, memory per idle connection) and exits 1 on any failure.
//
// node --test loads every .js under dist/test/ (npm test), this file included; under the test
// runner it does nothing.
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type net from 'node:net';
import { ErrorCodes } from '../../src/errors.js';
import { MessageType } from '../../src/engine/protocol/messages.js';
import { freePort, runRelay, tempDir, type LogLine, type RelayProcess } from '../e2e/harness.js';
import { roundTrip } from '../helpers/tunnel.js';
import { fuzzInWorker } from './fuzz.js';
import {
  closeTime,
  FIREHOSE_BYTES,
  LiveTransfer,
  loginRaw,
  MiB,
  mib,
  procStats,
  readSlowly,
  tcpConnect,
  TestService,
  waitUntil,
  within,
  type RawLogin,
  type TransferResult,
} from './support.js';

const FUZZ_MS = 45_000;
const CHURN_MS = 60_000;
const CHURN_WORKERS = 16;
const IDLE_WAITING = 10_000;
const IDLE_PAIRED = 4_000;
const HEARTBEAT_MS = 200;
const CLIENT_WAIT_MS = 30_000;

interface Totals {
  inputs: number;
  faultsSurvived: number;
  faultsTried: number;
  bytesLost: number;
  failures: string[];
  lines: string[];
}

const totals: Totals = { inputs: 0, faultsSurvived: 0, faultsTried: 0, bytesLost: 0, failures: [], lines: [] };

function note(line: string): void {
  totals.lines.push(line);
  console.log(`  ${line}`);
}

function lostIn(r: TransferResult): number {
  return r.intact ? 0 : Math.max(r.sentBytes, 1);
}

// ---------------------------------------------------------------------------------------------
// A deployment: one white with two grays ("legit", served by a real gray process, and "sink",
// logged in from here and never dialing, so its clients stay queued), and a local service.

class Deployment {
  white!: RelayProcess;
  gray!: RelayProcess;
  service = new TestService();
  controlPort = 0;
  legit = { publicPort: 0, dataPort: 0 };
  sink = { publicPort: 0, dataPort: 0 };
  readonly legitSecret = randomBytes(32).toString('base64url');
  readonly sinkSecret = randomBytes(32);
  whitePath = '';
  grayPath = '';
  private dir: { path: string; cleanup: () => Promise<void> } | null = null;

  async create(): Promise<void> {
    this.dir = await tempDir();
    await this.service.start();
    [this.controlPort, this.legit.publicPort, this.legit.dataPort, this.sink.publicPort, this.sink.dataPort] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    this.whitePath = join(this.dir.path, 'white.yaml');
    this.grayPath = join(this.dir.path, 'gray.yaml');
    await writeFile(
      this.whitePath,
      [
        `control: { listen: "127.0.0.1:${this.controlPort}" }`,
        `bind: "127.0.0.1"`,
        `admin: { socket: null }`,
        `limits: { heartbeat_interval_ms: ${HEARTBEAT_MS}, heartbeat_missed: 3, pending_clients_per_gray: ${IDLE_WAITING + 2000}, client_wait_ms: ${CLIENT_WAIT_MS} }`,
        `grays:`,
        `  - id: legit`,
        `    secret: "${this.legitSecret}"`,
        `    public_port: ${this.legit.publicPort}`,
        `    data_port: ${this.legit.dataPort}`,
        `  - id: sink`,
        `    secret: "${this.sinkSecret.toString('base64url')}"`,
        `    public_port: ${this.sink.publicPort}`,
        `    data_port: ${this.sink.dataPort}`,
        '',
      ].join('\n'),
    );
    await writeFile(
      this.grayPath,
      [
        `white: "127.0.0.1:${this.controlPort}"`,
        `id: legit`,
        `secret: "${this.legitSecret}"`,
        `target: "127.0.0.1:${this.service.port}"`,
        `pool: 8`,
        `limits: { reconnect_base_ms: 100, reconnect_max_ms: 1000 }`,
        '',
      ].join('\n'),
    );
    await this.startWhite();
    await this.startGray();
  }

  async startWhite(): Promise<void> {
    this.white = runRelay(['white', '--config', this.whitePath]);
    await this.white.waitForMsg('listening');
  }

  async startGray(): Promise<void> {
    this.gray = runRelay(['gray', '--config', this.grayPath]);
    await this.gray.waitForMsg('pool ready');
  }

  /** Both processes alive and serving; restarts what died (and reports it). */
  async ensureServing(phase: string): Promise<void> {
    for (const [name, proc] of [['white', this.white], ['gray', this.gray]] as const) {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
        const why = proc.stderr.join('').split('\n').slice(0, 3).join(' | ');
        totals.failures.push(`${phase}: the ${name} process died (${String(proc.child.exitCode ?? proc.child.signalCode)}): ${why}`);
        if (name === 'white') await this.startWhite();
        else await this.startGray();
      }
    }
    if (this.white.child.exitCode === null) {
      const mark = this.gray.lines.length;
      const ok = await within(roundTrip(this.legit.publicPort, Buffer.from('ping')), 3000, 'a round trip').then(
        (b) => b.toString() === 'ping',
        () => false,
      );
      if (!ok) {
        // The gray may be reconnecting after a white restart: give it its backoff.
        await this.gray.waitFor((l) => this.gray.lines.indexOf(l) >= mark && l.msg === 'pool ready', 'the pool', 15_000).catch(() => {});
      }
    }
  }

  async destroy(): Promise<void> {
    this.gray?.child.kill('SIGCONT');
    await this.gray?.kill();
    await this.white?.kill();
    this.service.stop();
    await this.dir?.cleanup();
  }
}

const since = (proc: RelayProcess, mark: number, match: (l: LogLine) => boolean) => (l: LogLine) => proc.lines.indexOf(l) >= mark && match(l);

// ---------------------------------------------------------------------------------------------
// Phases

async function phaseFuzz(): Promise<void> {
  const report = await fuzzInWorker(FUZZ_MS);
  totals.inputs += report.inputs;
  note(`fuzz: ${report.inputs} inputs in ${(report.elapsedMs / 1000).toFixed(0)} s, seed ${report.seed} (${Object.entries(report.perTarget).map(([k, v]) => `${k} ${v}`).join(', ')})`);
  for (const f of report.failures) totals.failures.push(`fuzz: ${f}`);
}

async function phaseChurn(d: Deployment): Promise<void> {
  for (let i = 0; i < 20; i++) await roundTrip(d.legit.publicPort, randomBytes(1024));
  const base = { white: procStats(d.white.child.pid!), gray: procStats(d.gray.child.pid!) };
  const live = await LiveTransfer.start(d.legit.publicPort);
  const deadline = Date.now() + CHURN_MS;
  // RSS climbs to a plateau (the heap's working set under this load) within seconds; a leak keeps
  // climbing. So growth is judged from a third of the way in to the end.
  let mid: { white: number; gray: number } | null = null;
  const midTimer = setTimeout(() => (mid = { white: procStats(d.white.child.pid!).rssBytes, gray: procStats(d.gray.child.pid!).rssBytes }), CHURN_MS / 3);
  const counts = { roundTrips: 0, resets: 0, abandoned: 0, halfClosed: 0, lostBytes: 0, failedRoundTrips: 0 };
  let n = 0;
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline && n < 1_000_000) {
      const kind = n++ % 4;
      if (kind === 0) {
        const payload = randomBytes(512 + (n % 8192));
        const echoed = await within(roundTrip(d.legit.publicPort, payload), 10_000, 'a round trip').catch(() => null);
        counts.roundTrips += 1;
        if (!echoed || !echoed.equals(payload)) {
          counts.failedRoundTrips += 1;
          counts.lostBytes += payload.length;
        }
        continue;
      }
      const c = await tcpConnect(d.legit.publicPort).catch(() => null);
      if (!c) continue;
      if (kind === 1) {
        c.resetAndDestroy();
        counts.resets += 1;
      } else if (kind === 2) {
        c.write(randomBytes(4096));
        c.destroy();
        counts.abandoned += 1;
      } else {
        c.end();
        await within(closeTime(c), 10_000, 'a half-closed client').catch(() => c.destroy());
        counts.halfClosed += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: CHURN_WORKERS }, worker));
  clearTimeout(midTimer);
  const transfer = await live.finish().catch((err: Error) => {
    totals.failures.push(`churn: the live transfer failed: ${err.message}`);
    return null;
  });
  if (transfer) totals.bytesLost += lostIn(transfer);
  totals.bytesLost += counts.lostBytes;
  if (counts.failedRoundTrips > 0) totals.failures.push(`churn: ${counts.failedRoundTrips} of ${counts.roundTrips} round trips did not come back whole`);
  if (transfer && !transfer.intact) totals.failures.push('churn: the live transfer was damaged');
  await d.ensureServing('churn');
  let settled = true;
  await waitUntil(
    () => {
      const w = procStats(d.white.child.pid!).fds;
      const g = procStats(d.gray.child.pid!).fds;
      return w <= base.white.fds + 8 && g <= base.gray.fds + 8;
    },
    'descriptors back near their baseline',
    CLIENT_WAIT_MS + 10_000,
    250,
  ).catch(() => (settled = false));
  const end = { white: procStats(d.white.child.pid!), gray: procStats(d.gray.child.pid!) };
  note(
    `churn: ${counts.roundTrips} round trips, ${counts.resets} resets, ${counts.abandoned} abandoned mid-request, ${counts.halfClosed} half-closed in ${CHURN_MS / 1000} s; ` +
      `live transfer ${transfer ? mib(transfer.receivedBytes) : 'failed'}; fds white ${base.white.fds}→${end.white.fds}, gray ${base.gray.fds}→${end.gray.fds}; ` +
      `RSS white ${mib(base.white.rssBytes)}→${mib(end.white.rssBytes)}, gray ${mib(base.gray.rssBytes)}→${mib(end.gray.rssBytes)}`,
  );
  if (!settled) totals.failures.push(`churn: descriptors did not return near their baseline (white ${base.white.fds}→${end.white.fds}, gray ${base.gray.fds}→${end.gray.fds})`);
  const plateau = mid as { white: number; gray: number } | null;
  if (plateau) note(`churn: RSS a third of the way in white ${mib(plateau.white)}, gray ${mib(plateau.gray)}`);
  for (const side of ['white', 'gray'] as const) {
    const grown = end[side].rssBytes - base[side].rssBytes;
    if (grown > 128 * MiB) totals.failures.push(`churn: ${side} RSS grew by ${mib(grown)}`);
    if (plateau && end[side].rssBytes - plateau[side] > 32 * MiB) {
      totals.failures.push(`churn: ${side} RSS still growing: ${mib(plateau[side])} a third of the way in, ${mib(end[side].rssBytes)} at the end`);
    }
  }
}

/** One fault: counts it as survived if `body` completes and the tunnel serves afterwards. */
async function fault(d: Deployment, name: string, body: () => Promise<void>): Promise<void> {
  totals.faultsTried += 1;
  try {
    await body();
    const echoed = await within(roundTrip(d.legit.publicPort, Buffer.from(name)), 10_000, 'a round trip after the fault');
    if (echoed.toString() !== name) throw new Error('the round trip after the fault came back wrong');
    totals.faultsSurvived += 1;
  } catch (err) {
    totals.failures.push(`fault "${name}": ${(err as Error).message}`);
    await d.ensureServing(name);
  }
}

async function phaseFaults(d: Deployment): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await fault(d, `gray frozen ${i + 1}`, async () => {
      const live = await LiveTransfer.start(d.legit.publicPort);
      await live.progressed();
      const wMark = d.white.lines.length;
      const gMark = d.gray.lines.length;
      d.gray.child.kill('SIGSTOP');
      try {
        const down = await d.white.waitFor(since(d.white, wMark, (l) => l.msg === 'gray disconnected'), 'the frozen gray to be dropped', 10_000);
        if (down.code !== ErrorCodes.HEARTBEAT_TIMEOUT) throw new Error(`dropped with ${String(down.code)}`);
        const c = await tcpConnect(d.legit.publicPort);
        if ((await closeTime(c)) > 1000) throw new Error('a client was not refused at once while the gray was frozen');
      } finally {
        d.gray.child.kill('SIGCONT');
      }
      await d.gray.waitFor(since(d.gray, gMark, (l) => l.msg === 'pool ready'), 'the thawed gray to serve again', 15_000);
      await live.progressed();
      const r = await live.finish();
      totals.bytesLost += lostIn(r);
      if (!r.intact) throw new Error('a transfer spanning the freeze was damaged');
    });
  }
  for (let i = 0; i < 3; i++) {
    await fault(d, `service outage ${i + 1}`, async () => {
      const port = d.service.port;
      d.service.stop();
      for (let k = 0; k < 5; k++) {
        const c = await tcpConnect(d.legit.publicPort);
        c.write('x');
        if ((await within(closeTime(c), 5000, 'a refused client')) > 2000) throw new Error('a client was not closed promptly');
      }
      d.service = new TestService(port);
      await d.service.start();
      for (let k = 0; k < 12; k++) {
        const p = randomBytes(2048);
        if (!(await within(roundTrip(d.legit.publicPort, p), 5000, 'a round trip')).equals(p)) throw new Error('bytes differ after the outage');
      }
    });
  }
  if (!d.gray.lines.some((l) => l.code === ErrorCodes.TARGET_UNREACHABLE)) totals.failures.push('faults: the gray never logged TARGET_UNREACHABLE');
  for (let i = 0; i < 2; i++) {
    await fault(d, `gray killed ${i + 1}`, async () => {
      await d.gray.kill('SIGKILL');
      await d.startGray();
    });
  }
  await fault(d, 'white killed', async () => {
    const mark = d.gray.lines.length;
    await d.white.kill('SIGKILL');
    await d.startWhite();
    await d.gray.waitFor(since(d.gray, mark, (l) => l.msg === 'pool ready'), 'the gray back on the new white', 20_000);
  });
  note(`faults: ${totals.faultsSurvived} of ${totals.faultsTried} survived (5 gray freezes, 3 service outages, 2 gray kill -9, 1 white kill -9)`);
}

async function phaseSlowReader(d: Deployment): Promise<void> {
  const pids = { white: d.white.child.pid!, gray: d.gray.child.pid! };
  const base = { white: procStats(pids.white).rssBytes, gray: procStats(pids.gray).rssBytes };
  const peak = { ...base };
  const sampler = setInterval(() => {
    for (const side of ['white', 'gray'] as const) peak[side] = Math.max(peak[side], procStats(pids[side]).rssBytes);
  }, 50);
  const hash = createHash('sha256');
  let received = 0;
  const client = await tcpConnect(d.legit.publicPort);
  client.pause();
  const ended = new Promise<void>((resolve, reject) => {
    client.on('end', resolve);
    client.on('error', reject);
  });
  try {
    d.service.firehose = null;
    client.write('FIRE');
    await waitUntil(() => d.service.firehose !== null, 'the firehose');
    const hose = d.service.firehose!;
    let last = -1;
    let stable = 0;
    await waitUntil(
      () => {
        stable = hose.drains === last && hose.written > 0 ? stable + 1 : 0;
        last = hose.drains;
        return stable >= 20;
      },
      'the service to be held back',
      30_000,
      50,
    );
    const parked = hose.written;
    client.on('data', (c: Buffer) => {
      hash.update(c);
      received += c.length;
    });
    await readSlowly(client, 5000, () => received >= FIREHOSE_BYTES);
    client.resume();
    await within(ended, 120_000, 'the 200 MB');
    const intact = received === FIREHOSE_BYTES && hash.digest('hex') === (await hose.digest);
    if (!intact) {
      totals.bytesLost += Math.max(1, FIREHOSE_BYTES - received);
      totals.failures.push(`slow reader: ${received} of ${FIREHOSE_BYTES} bytes, digest ${intact ? 'ok' : 'differs'}`);
    }
    const grown = { white: peak.white - base.white, gray: peak.gray - base.gray };
    note(`slow reader: 200 MB intact=${intact}; service held back after ${mib(parked)}; peak RSS growth white ${mib(grown.white)}, gray ${mib(grown.gray)}`);
    for (const side of ['white', 'gray'] as const) if (grown[side] > 64 * MiB) totals.failures.push(`slow reader: ${side} RSS grew by ${mib(grown[side])}`);
  } finally {
    clearInterval(sampler);
    client.destroy();
  }
}

async function openMany(port: number, total: number, batch = 500): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  while (sockets.length < total) {
    const n = Math.min(batch, total - sockets.length);
    sockets.push(...(await Promise.all(Array.from({ length: n }, () => tcpConnect(port)))));
  }
  return sockets;
}

async function phaseIdle(d: Deployment): Promise<void> {
  const live = await LiveTransfer.start(d.legit.publicPort);
  await live.progressed();
  // 1. Paired idle clients: each holds a data connection through the gray to the service.
  const before = { white: procStats(d.white.child.pid!), gray: procStats(d.gray.child.pid!) };
  const paired = await openMany(d.legit.publicPort, IDLE_PAIRED);
  await waitUntil(() => procStats(d.gray.child.pid!).fds >= before.gray.fds + 2 * IDLE_PAIRED, `${IDLE_PAIRED} pairs to reach the service`, 60_000, 100);
  const full = { white: procStats(d.white.child.pid!), gray: procStats(d.gray.child.pid!) };
  const perPaired = { white: (full.white.rssBytes - before.white.rssBytes) / IDLE_PAIRED, gray: (full.gray.rssBytes - before.gray.rssBytes) / IDLE_PAIRED };
  note(`idle paired: ${IDLE_PAIRED} clients: RSS per connection white ${(perPaired.white / 1024).toFixed(1)} KiB, gray ${(perPaired.gray / 1024).toFixed(1)} KiB (fds white ${full.white.fds}, gray ${full.gray.fds})`);
  for (const c of paired) c.destroy();
  await waitUntil(() => procStats(d.white.child.pid!).fds <= before.white.fds + 16, 'the paired clients to be cleaned up', 30_000, 100).catch(() =>
    totals.failures.push(`idle: the white kept ${procStats(d.white.child.pid!).fds - before.white.fds} extra descriptors after ${IDLE_PAIRED} paired clients left`),
  );

  // 2. Clients queued on a gray whose pool never fills: what a waiting client costs the white.
  const sink: RawLogin = await loginRaw(d.controlPort, 'sink', d.sinkSecret, 1);
  const keepAlive = setInterval(() => sink.probe.send({ type: MessageType.PING, t: 1 }), 100); // any frame is life
  try {
    const base = procStats(d.white.child.pid!);
    const waiting = await openMany(d.sink.publicPort, IDLE_WAITING);
    await waitUntil(() => procStats(d.white.child.pid!).fds >= base.fds + IDLE_WAITING, `${IDLE_WAITING} clients accepted`, 30_000, 100);
    const loaded = procStats(d.white.child.pid!);
    const per = (loaded.rssBytes - base.rssBytes) / IDLE_WAITING;
    note(`idle waiting: ${IDLE_WAITING} clients queued: white RSS ${mib(base.rssBytes)}→${mib(loaded.rssBytes)}, ${(per / 1024).toFixed(2)} KiB per connection`);
    if (per > 64 * 1024) totals.failures.push(`idle: ${(per / 1024).toFixed(1)} KiB per waiting client`);
    await live.progressed();
    for (const c of waiting) c.destroy();
    // The white does not see a queued client leave (see the hardening tests); it is closed at
    // client_wait_ms at the latest.
    await waitUntil(() => procStats(d.white.child.pid!).fds <= base.fds + 16, 'the queued clients to be released', CLIENT_WAIT_MS + 15_000, 250).catch(() =>
      totals.failures.push('idle: the white kept the queued clients past client_wait_ms'),
    );
  } finally {
    clearInterval(keepAlive);
    sink.probe.destroy();
  }
  const r = await live.finish();
  totals.bytesLost += lostIn(r);
  if (!r.intact) totals.failures.push('idle: the live transfer was damaged');
}

async function main(): Promise<number> {
  const started = Date.now();
  console.log('relay soak (loopback only)');
  const phases: Array<[string, (d: Deployment) => Promise<void>]> = [
    ['churn', phaseChurn],
    ['faults', phaseFaults],
    ['slow reader', phaseSlowReader],
    ['idle', phaseIdle],
  ];
  try {
    await phaseFuzz();
  } catch (err) {
    totals.failures.push(`fuzz: ${(err as Error).message}`);
  }
  const d = new Deployment();
  try {
    await d.create();
    for (const [name, run] of phases) {
      try {
        await run(d);
      } catch (err) {
        totals.failures.push(`${name}: ${(err as Error).message}`);
        await d.ensureServing(name).catch((e: Error) => totals.failures.push(`${name}: could not restore the deployment: ${e.message}`));
      }
    }
  } finally {
    await d.destroy();
  }
  console.log('');
  console.log('summary');
  console.log(`  inputs tried:   ${totals.inputs}`);
  console.log(`  faults survived: ${totals.faultsSurvived} of ${totals.faultsTried}`);
  console.log(`  bytes lost:     ${totals.bytesLost}`);
  console.log(`  duration:       ${((Date.now() - started) / 1000).toFixed(0)} s`);
  if (totals.bytesLost > 0 && !totals.failures.some((f) => /damaged|whole|bytes/.test(f))) totals.failures.push(`${totals.bytesLost} bytes lost`);
  if (totals.failures.length > 0) {
    console.log(`  FAILED (${totals.failures.length}):`);
    for (const f of totals.failures) console.log(`    - ${f}`);
    return 1;
  }
  console.log('  PASSED');
  return 0;
}

if (!process.env.NODE_TEST_CONTEXT) {
  // Exit explicitly: a socket or timer left behind by a failed phase must not keep the run alive.
  process.exit(await main());
}
