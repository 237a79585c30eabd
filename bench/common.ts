// Shared helpers for the benchmark harness: paths, free ports, small statistics, echo probes.
// Everything here talks to 127.0.0.1 only; the bench never leaves loopback.
import fs from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

export const HOST = '127.0.0.1';

/** Repo root, found from this file's compiled place (dist/bench/common.js). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Directory of the compiled bench scripts (dist/bench/), used to fork the service and load generator. */
export const BENCH_DIST = fileURLToPath(new URL('./', import.meta.url));

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A free port: bind port 0 and close. The port could be taken again before we use it; accepted. */
export async function freePort(): Promise<number> {
  const [p] = await freePorts(1);
  if (p === undefined) throw new Error('no free port');
  return p;
}

/** n distinct free ports: hold all n sockets open at once so the kernel cannot hand out one twice. */
export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  const ports: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const srv = net.createServer();
      servers.push(srv);
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(0, HOST, () => resolve());
      });
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') throw new Error('unexpected address');
      ports.push(addr.port);
    }
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
  return ports;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Nearest-rank percentile over an already sorted typed array (p in 0..100). */
export function percentileSorted(sorted: ArrayLike<number>, n: number, p: number): number {
  if (n === 0) return NaN;
  const rank = Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1));
  return sorted[rank]!;
}

/** The soft limit on open files of this process (children inherit it). */
export function openFilesLimit(): { soft: number; hard: number } {
  try {
    const text = fs.readFileSync('/proc/self/limits', 'utf8');
    const line = text.split('\n').find((l) => l.startsWith('Max open files'));
    const m = line?.match(/Max open files\s+(\S+)\s+(\S+)/);
    const conv = (v: string | undefined): number => (v === undefined || v === 'unlimited' ? Infinity : Number(v));
    if (m) return { soft: conv(m[1]), hard: conv(m[2]) };
  } catch {
    /* not Linux: fall through */
  }
  return { soft: NaN, hard: NaN };
}

/**
 * One end-to-end echo exchange through `port` (service mode 'E'). Used as the readiness test for
 * every target: a listener being up is not enough, the whole chain must answer.
 */
export function echoProbe(port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from('probe-' + Math.random().toString(36).slice(2));
    const sock = net.connect({ host: HOST, port });
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error(`no echo within ${timeoutMs} ms`)), timeoutMs);
    let done = false;
    function finish(err: Error | null): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve();
    }
    sock.on('connect', () => sock.write(Buffer.concat([Buffer.from('E'), payload])));
    sock.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= payload.length) {
        finish(got.subarray(0, payload.length).equals(payload) ? null : new Error('echo mismatch'));
      }
    });
    sock.on('error', (e) => finish(e));
    sock.on('close', () => finish(new Error('closed before the echo came back')));
  });
}

/** Retry echoProbe until it succeeds or the deadline passes. */
export async function waitEcho(port: number, deadlineMs: number): Promise<void> {
  let last: unknown = null;
  while (Date.now() < deadlineMs) {
    try {
      await echoProbe(port, Math.max(200, Math.min(2000, deadlineMs - Date.now())));
      return;
    } catch (e) {
      last = e;
      await sleep(100);
    }
  }
  throw new Error(`chain did not answer an echo: ${last instanceof Error ? last.message : String(last)}`);
}

export function fmtNum(x: number, digits = 0): string {
  if (!Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
