// The load generator, run as its own child process so that it does not share an event loop with
// the processes being measured (white, gray, haproxy) nor with the service. The harness sends one
// workload at a time over IPC and gets one result back. Every loop here is bounded twice: by a
// deadline and by a count, and a watchdog tears everything down if neither fired.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { HOST, percentileSorted } from './common.js';
import type {
  BulkResult,
  IdleResult,
  KeptResult,
  LoadgenReply,
  NewConnResult,
  RunRequest,
  Workload,
  WorkloadResult,
} from './types.js';

const now = (): number => performance.now();
const CHUNK = Buffer.alloc(64 * 1024, 0x62);
/** Grace after a workload's own time, before the watchdog gives up on it. */
const WATCHDOG_GRACE_MS = 10_000;

/** Latency samples in microseconds; grows by doubling up to `cap` so small runs stay small. */
class Samples {
  private buf = new Uint32Array(4096);
  n = 0;
  constructor(private readonly cap: number) {}
  add(us: number): void {
    if (this.n >= this.cap) return;
    if (this.n === this.buf.length) {
      const next = new Uint32Array(Math.min(this.cap, this.buf.length * 2));
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.n++] = Math.min(0xffffffff, Math.round(us));
  }
  percentiles(): { p50: number; p99: number } {
    const s = this.buf.subarray(0, this.n).sort();
    return { p50: percentileSorted(s, this.n, 50), p99: percentileSorted(s, this.n, 99) };
  }
}

function errText(e: unknown): string {
  return e instanceof Error ? ((e as NodeJS.ErrnoException).code ?? e.message) : String(e);
}

// ---------------------------------------------------------------------------------------------
// Bulk throughput

interface StreamOutcome {
  bytes: number;
  t0: number;
  t1: number;
  error: string | null;
}

function uploadStream(port: number, deadline: number, maxBytes: number, all: Set<net.Socket>): Promise<StreamOutcome> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: HOST, port, allowHalfOpen: true });
    all.add(sock);
    let t0 = NaN;
    let sent = 0;
    let answer = '';
    let done = false;
    const finish = (error: string | null, bytes: number): void => {
      if (done) return;
      done = true;
      all.delete(sock);
      sock.destroy();
      resolve({ bytes, t0, t1: now(), error });
    };
    const pump = (): void => {
      while (now() < deadline && sent < maxBytes) {
        sent += CHUNK.length;
        if (!sock.write(CHUNK)) {
          sock.once('drain', pump);
          return;
        }
      }
      // Half-close: the service answers with the byte count it really received.
      sock.end();
    };
    sock.setNoDelay(true);
    sock.on('connect', () => {
      t0 = now();
      sock.write('U');
      pump();
    });
    sock.setEncoding('latin1');
    sock.on('data', (s: string) => {
      answer += s;
    });
    sock.on('end', () => {
      const total = Number.parseInt(answer, 10);
      if (Number.isFinite(total)) finish(null, total);
      else finish(`bad upload answer ${JSON.stringify(answer.slice(0, 40))}`, 0);
    });
    sock.on('error', (e) => finish(errText(e), 0));
    sock.on('close', () => finish('closed without an answer', 0));
  });
}

function downloadStream(port: number, deadline: number, maxBytes: number, all: Set<net.Socket>): Promise<StreamOutcome> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: HOST, port });
    all.add(sock);
    let t0 = NaN;
    let bytes = 0;
    let done = false;
    let timer: NodeJS.Timeout | null = null;
    const finish = (error: string | null): void => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      const t1 = now();
      all.delete(sock);
      sock.destroy();
      resolve({ bytes, t0, t1, error });
    };
    sock.setNoDelay(true);
    sock.on('connect', () => {
      t0 = now();
      const hdr = Buffer.alloc(9);
      hdr[0] = 0x44; // 'D'
      hdr.writeBigUInt64BE(BigInt(maxBytes), 1);
      sock.write(hdr);
      timer = setTimeout(() => finish(null), Math.max(0, deadline - now()));
    });
    sock.on('data', (c: Buffer) => {
      bytes += c.length;
    });
    sock.on('end', () => finish(bytes > 0 ? null : 'ended with no data'));
    sock.on('error', (e) => finish(errText(e)));
    sock.on('close', () => finish(bytes > 0 ? null : 'closed with no data'));
  });
}

async function runBulk(port: number, w: Extract<Workload, { kind: 'bulk' }>): Promise<BulkResult> {
  const all = new Set<net.Socket>();
  const deadline = now() + w.seconds * 1000;
  const watchdog = setTimeout(() => all.forEach((s) => s.destroy(new Error('watchdog'))), w.seconds * 1000 + WATCHDOG_GRACE_MS);
  const fn = w.dir === 'up' ? uploadStream : downloadStream;
  const outcomes = await Promise.all(
    Array.from({ length: w.streams }, () => fn(port, deadline, w.maxBytesPerStream, all)),
  );
  clearTimeout(watchdog);
  const ok = outcomes.filter((o) => o.error === null && Number.isFinite(o.t0));
  const bytes = ok.reduce((a, o) => a + o.bytes, 0);
  // Aggregate rate over the wall time from the first connect to the last stream's end.
  const t0 = Math.min(...ok.map((o) => o.t0));
  const t1 = Math.max(...ok.map((o) => o.t1));
  const seconds = ok.length > 0 ? (t1 - t0) / 1000 : 0;
  const firstErr = outcomes.find((o) => o.error !== null);
  return {
    kind: 'bulk',
    mbPerSec: seconds > 0 && ok.length === w.streams ? bytes / 1e6 / seconds : NaN,
    bytes,
    seconds,
    streamsOk: ok.length,
    errors: outcomes.length - ok.length,
    firstError: firstErr?.error ?? null,
  };
}

// ---------------------------------------------------------------------------------------------
// Request/response on kept connections

async function runKept(port: number, w: Extract<Workload, { kind: 'kept' }>): Promise<KeptResult> {
  const start = now();
  const warmEnd = start + w.warmupSeconds * 1000;
  const deadline = start + w.seconds * 1000;
  const samples = new Samples(w.maxRequests);
  const msg = Buffer.alloc(w.msgBytes, 0x6b);
  const first = Buffer.concat([Buffer.from('E'), msg]);
  let total = 0; // all requests, warm-up included: this is the count bound
  let recorded = 0;
  let stopAt = NaN;
  let errors = 0;
  let firstError: string | null = null;
  const socks = new Set<net.Socket>();
  const stop = (): void => {
    if (Number.isNaN(stopAt)) stopAt = now();
  };
  const stopTimer = setTimeout(stop, w.seconds * 1000);

  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const sock = net.connect({ host: HOST, port });
      socks.add(sock);
      sock.setNoDelay(true);
      let got = 0;
      let tSend = 0;
      let done = false;
      const finish = (err: string | null): void => {
        if (done) return;
        done = true;
        if (err !== null) {
          errors++;
          firstError ??= err;
        }
        socks.delete(sock);
        sock.destroy();
        resolve();
      };
      const send = (): void => {
        if (!Number.isNaN(stopAt) || total >= w.maxRequests || now() >= deadline) {
          stop();
          finish(null);
          return;
        }
        total++;
        tSend = now();
        sock.write(msg);
      };
      sock.on('connect', () => {
        total++;
        tSend = now();
        sock.write(first);
      });
      sock.on('data', (c: Buffer) => {
        got += c.length;
        if (got < w.msgBytes) return;
        got -= w.msgBytes; // serial requests: never more than one answer in flight
        const t = now();
        if (tSend >= warmEnd && Number.isNaN(stopAt)) {
          samples.add((t - tSend) * 1000);
          recorded++;
        }
        send();
      });
      sock.on('error', (e) => finish(errText(e)));
      sock.on('close', () => finish(Number.isNaN(stopAt) ? 'closed by peer' : null));
    });

  const watchdog = setTimeout(() => socks.forEach((s) => s.destroy(new Error('watchdog'))), w.seconds * 1000 + WATCHDOG_GRACE_MS);
  await Promise.all(Array.from({ length: w.conns }, one));
  clearTimeout(watchdog);
  clearTimeout(stopTimer);
  stop();
  const seconds = Math.max(0, (stopAt - warmEnd) / 1000);
  const p = samples.percentiles();
  return {
    kind: 'kept',
    // Errors do not void the rate: the harness lists them next to the table.
    reqPerSec: seconds > 0 ? recorded / seconds : NaN,
    requests: recorded,
    seconds,
    rttP50Us: p.p50,
    rttP99Us: p.p99,
    errors,
    firstError,
  };
}

// ---------------------------------------------------------------------------------------------
// New connections: connect, send a small request, read the answer, close.

async function runNewConn(port: number, w: Extract<Workload, { kind: 'newconn' }>): Promise<NewConnResult> {
  const start = now();
  const warmEnd = start + w.warmupSeconds * 1000;
  const deadline = start + w.seconds * 1000;
  const samples = new Samples(w.maxConnections);
  const req = Buffer.concat([Buffer.from('E'), Buffer.alloc(w.msgBytes, 0x6e)]);
  let started = 0;
  let counted = 0;
  let errors = 0;
  let firstError: string | null = null;
  const socks = new Set<net.Socket>();
  /** Per-connection bound, so one stuck connection cannot hold a worker forever. */
  const CONN_TIMEOUT_MS = 5_000;

  const oneConn = (): Promise<boolean> =>
    new Promise((resolve) => {
      const t0 = now();
      let ttfb = NaN;
      let got = 0;
      let done = false;
      const sock = net.connect({ host: HOST, port });
      socks.add(sock);
      sock.setNoDelay(true);
      sock.setTimeout(CONN_TIMEOUT_MS, () => sock.destroy(new Error('connection timeout')));
      const finish = (err: string | null): void => {
        if (done) return;
        done = true;
        socks.delete(sock);
        sock.destroy();
        const t1 = now();
        if (err !== null) {
          errors++;
          firstError ??= err;
        } else if (t1 >= warmEnd && t1 <= deadline && got >= w.msgBytes) {
          // Counted by completion time inside the measured window.
          counted++;
          samples.add(ttfb * 1000);
        }
        resolve(err === null);
      };
      sock.on('connect', () => sock.write(req));
      sock.on('data', (c: Buffer) => {
        if (Number.isNaN(ttfb)) ttfb = now() - t0;
        got += c.length;
        // Full answer read: close our side and let the close travel back through the chain.
        if (got >= w.msgBytes) sock.end();
      });
      sock.on('error', (e) => finish(errText(e)));
      sock.on('close', () => finish(got >= w.msgBytes ? null : 'closed before the answer'));
    });

  const worker = async (): Promise<void> => {
    while (now() < deadline && started < w.maxConnections) {
      started++;
      // A chain refusing connections would make this loop spin; back off a little after an error.
      if (!(await oneConn())) await new Promise((r) => setTimeout(r, 10));
    }
  };
  const watchdog = setTimeout(() => socks.forEach((s) => s.destroy(new Error('watchdog'))), w.seconds * 1000 + WATCHDOG_GRACE_MS);
  await Promise.all(Array.from({ length: w.concurrency }, worker));
  clearTimeout(watchdog);
  const windowEnd = Math.min(now(), deadline);
  const seconds = Math.max(0, (windowEnd - warmEnd) / 1000);
  const p = samples.percentiles();
  return {
    kind: 'newconn',
    connPerSec: seconds > 0 ? counted / seconds : NaN,
    connections: counted,
    seconds,
    ttfbP50Us: p.p50,
    ttfbP99Us: p.p99,
    errors,
    firstError,
  };
}

// ---------------------------------------------------------------------------------------------
// Scale: many idle connections, each proven end to end, held until released.

const held: net.Socket[] = [];

async function runIdleOpen(port: number, w: Extract<Workload, { kind: 'idle-open' }>): Promise<IdleResult> {
  const start = now();
  const deadline = start + w.timeoutSeconds * 1000;
  let next = 0;
  let failed = 0;
  let firstError: string | null = null;
  const openOne = (): Promise<void> =>
    new Promise((resolve) => {
      const sock = net.connect({ host: HOST, port });
      let done = false;
      const timer = setTimeout(() => fail('no echo within 15 s'), 15_000);
      const fail = (err: string): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        failed++;
        firstError ??= err;
        sock.destroy();
        resolve();
      };
      sock.on('connect', () => sock.write('Ei'));
      sock.once('data', () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        held.push(sock);
        resolve();
      });
      sock.on('error', (e) => fail(errText(e)));
      sock.on('close', () => fail('closed'));
    });
  const worker = async (): Promise<void> => {
    while (next < w.conns && now() < deadline) {
      next++;
      await openOne();
      // Stop early if the chain clearly refuses: no point in 10,000 failures.
      if (failed > 100 && failed > held.length) return;
    }
  };
  await Promise.all(Array.from({ length: w.connectConcurrency }, worker));
  return { kind: 'idle-open', opened: held.length, failed, seconds: (now() - start) / 1000, firstError };
}

async function runIdleRelease(): Promise<IdleResult> {
  const start = now();
  const n = held.length;
  for (const s of held.splice(0)) s.destroy();
  return { kind: 'idle-release', opened: n, failed: 0, seconds: (now() - start) / 1000, firstError: null };
}

async function run(port: number, w: Workload): Promise<WorkloadResult> {
  switch (w.kind) {
    case 'bulk':
      return runBulk(port, w);
    case 'kept':
      return runKept(port, w);
    case 'newconn':
      return runNewConn(port, w);
    case 'idle-open':
      return runIdleOpen(port, w);
    case 'idle-release':
      return runIdleRelease();
  }
}

function reply(m: LoadgenReply): void {
  process.send?.(m);
}

process.on('message', (m: RunRequest) => {
  if (m?.type !== 'run') return;
  run(m.port, m.workload).then(
    (result) => reply({ type: 'result', id: m.id, result }),
    (e: unknown) => reply({ type: 'failed', id: m.id, error: errText(e) }),
  );
});
// Never outlive the harness.
process.on('disconnect', () => process.exit(0));
reply({ type: 'ready' });
