// What is measured: the workloads, the figures read from their results, and the targets that
// relay is held to. One place, so the table, the JSON and the chart cannot disagree.
import type { ProcUsage } from './procstat.js';
import type { TargetName } from './targets.js';
import type { Workload, WorkloadResult, WrkWorkload } from './types.js';

/** The workloads the Node load generator runs (bench/loadgen.ts). */
export type LoadgenWorkloadId = 'bulk-up-1' | 'bulk-up-8' | 'bulk-down-1' | 'bulk-down-8' | 'kept-c1' | 'kept-c64' | 'new-c64';
/** new-c64-wrk: new connections from the C load generator wrk to nginx (bench/wrk.ts, bench/nginx.ts). */
export type WorkloadId = LoadgenWorkloadId | 'new-c64-wrk';
export const WORKLOAD_IDS: readonly WorkloadId[] = ['bulk-up-1', 'bulk-up-8', 'bulk-down-1', 'bulk-down-8', 'kept-c1', 'kept-c64', 'new-c64', 'new-c64-wrk'];

/** The targets that run new-c64-wrk: each gets a second instance whose service is nginx. */
export const WRK_TARGETS: readonly TargetName[] = ['direct', 'haproxy', 'relay'];

/**
 * relay+authorize runs the new-connection workload only: the hook is asked once per client
 * connection, so that is where its cost shows (kept connections and bulk streams pay it once,
 * at connect), and measuring one workload keeps the default run under 3 minutes.
 */
export const AUTHORIZE_WORKLOADS: readonly WorkloadId[] = ['new-c64'];

/** Whether `target` is measured on workload `w`. */
export function runsWorkload(target: TargetName, w: WorkloadId): boolean {
  if (w === 'new-c64-wrk') return WRK_TARGETS.includes(target);
  return target !== 'relay+authorize' || AUTHORIZE_WORKLOADS.includes(w);
}

export interface Timing {
  seconds: number;
  warmupSeconds: number;
}

/** Count bounds: far above what loopback on 2 cores reaches in the time given, but finite. */
const MAX_BYTES_PER_STREAM = 64 * 1024 ** 3;
const MAX_REQUESTS = 4_000_000;
const MAX_CONNECTIONS = 1_000_000;
const MSG_BYTES = 64;

export function workloadFor(id: 'new-c64-wrk', t: Timing): WrkWorkload;
export function workloadFor(id: LoadgenWorkloadId, t: Timing): Workload;
export function workloadFor(id: WorkloadId, t: Timing): Workload | WrkWorkload;
export function workloadFor(id: WorkloadId, t: Timing): Workload | WrkWorkload {
  switch (id) {
    case 'bulk-up-1':
      return { kind: 'bulk', dir: 'up', streams: 1, seconds: t.seconds, maxBytesPerStream: MAX_BYTES_PER_STREAM };
    case 'bulk-up-8':
      return { kind: 'bulk', dir: 'up', streams: 8, seconds: t.seconds, maxBytesPerStream: MAX_BYTES_PER_STREAM };
    case 'bulk-down-1':
      return { kind: 'bulk', dir: 'down', streams: 1, seconds: t.seconds, maxBytesPerStream: MAX_BYTES_PER_STREAM };
    case 'bulk-down-8':
      return { kind: 'bulk', dir: 'down', streams: 8, seconds: t.seconds, maxBytesPerStream: MAX_BYTES_PER_STREAM };
    case 'kept-c1':
      return { kind: 'kept', conns: 1, ...t, maxRequests: MAX_REQUESTS, msgBytes: MSG_BYTES };
    case 'kept-c64':
      return { kind: 'kept', conns: 64, ...t, maxRequests: MAX_REQUESTS, msgBytes: MSG_BYTES };
    case 'new-c64':
      return { kind: 'newconn', concurrency: 64, ...t, maxConnections: MAX_CONNECTIONS, msgBytes: MSG_BYTES };
    case 'new-c64-wrk':
      // wrk takes whole seconds, so its warm-up is a separate 1 s run, made only when the other
      // workloads warm up for at least 0.25 s (not in --quick).
      return { kind: 'wrk', concurrency: 64, threads: 1, seconds: Math.max(1, Math.round(t.seconds)), warmupSeconds: t.warmupSeconds >= 0.25 ? 1 : 0, maxConnections: MAX_CONNECTIONS };
  }
}

/** The unit of work of a workload, for "CPU per unit" (GB moved, requests, connections). */
export function workUnits(r: WorkloadResult): { units: number; label: string } {
  switch (r.kind) {
    case 'bulk':
      return { units: r.bytes / 1e9, label: 'CPU s/GB' };
    case 'kept':
      return { units: r.requests / 1e6, label: 'CPU µs/req' };
    case 'newconn':
    case 'wrk':
      return { units: r.connections / 1e6, label: 'CPU µs/conn' };
    default:
      return { units: NaN, label: '' };
  }
}

export interface MetricDef {
  id: string;
  label: string;
  unit: string;
  workload: WorkloadId;
  better: 'higher' | 'lower';
  digits: number;
  /** The figure of one measurement: from the load generator's result, or the processes' usage. */
  read: (r: WorkloadResult, procs: Readonly<Record<string, ProcUsage>>, target: TargetName) => number;
}

/** The proxy processes of each target. relay+authorize: the hook server (`authorize`) is the
 *  hook's side, reported on its own, so that CPU per unit stays comparable with the relay column. */
export const PROXY_PROCS: Record<TargetName, readonly string[]> = { direct: [], relay: ['white', 'gray'], haproxy: ['hop1', 'hop2'], 'relay+authorize': ['white', 'gray'] };

/** CPU seconds of the target's proxy processes per unit of work (NaN for direct, which has none). */
export function proxyCpuPerUnit(r: WorkloadResult, procs: Readonly<Record<string, ProcUsage>>, target: TargetName): number {
  const proxies = PROXY_PROCS[target];
  const { units } = workUnits(r);
  if (proxies.length === 0 || !(units > 0)) return NaN;
  return proxies.reduce((a, p) => a + (procs[p]?.cpuSec ?? NaN), 0) / units;
}

const num = (r: WorkloadResult, k: string): number => {
  const v = (r as unknown as Record<string, unknown>)[k];
  return typeof v === 'number' ? v : NaN;
};
const us2ms = (k: string) => (r: WorkloadResult): number => num(r, k) / 1000;

export const METRICS: readonly MetricDef[] = [
  { id: 'bulk_up_1', label: 'bulk upload, 1 stream', unit: 'MB/s', workload: 'bulk-up-1', better: 'higher', digits: 0, read: (r) => num(r, 'mbPerSec') },
  { id: 'bulk_up_8', label: 'bulk upload, 8 streams', unit: 'MB/s', workload: 'bulk-up-8', better: 'higher', digits: 0, read: (r) => num(r, 'mbPerSec') },
  { id: 'bulk_down_1', label: 'bulk download, 1 stream', unit: 'MB/s', workload: 'bulk-down-1', better: 'higher', digits: 0, read: (r) => num(r, 'mbPerSec') },
  { id: 'bulk_down_8', label: 'bulk download, 8 streams', unit: 'MB/s', workload: 'bulk-down-8', better: 'higher', digits: 0, read: (r) => num(r, 'mbPerSec') },
  { id: 'kept_c1_rate', label: 'kept conn c1, rate', unit: 'req/s', workload: 'kept-c1', better: 'higher', digits: 0, read: (r) => num(r, 'reqPerSec') },
  { id: 'kept_c1_p50', label: 'kept conn c1, RTT p50', unit: 'ms', workload: 'kept-c1', better: 'lower', digits: 3, read: us2ms('rttP50Us') },
  { id: 'kept_c1_p99', label: 'kept conn c1, RTT p99', unit: 'ms', workload: 'kept-c1', better: 'lower', digits: 3, read: us2ms('rttP99Us') },
  { id: 'kept_c64_rate', label: 'kept conn c64, rate', unit: 'req/s', workload: 'kept-c64', better: 'higher', digits: 0, read: (r) => num(r, 'reqPerSec') },
  { id: 'kept_c64_p50', label: 'kept conn c64, RTT p50', unit: 'ms', workload: 'kept-c64', better: 'lower', digits: 3, read: us2ms('rttP50Us') },
  { id: 'kept_c64_p99', label: 'kept conn c64, RTT p99', unit: 'ms', workload: 'kept-c64', better: 'lower', digits: 3, read: us2ms('rttP99Us') },
  { id: 'new_c64_rate', label: 'new conn c64, rate', unit: 'conn/s', workload: 'new-c64', better: 'higher', digits: 0, read: (r) => num(r, 'connPerSec') },
  { id: 'new_c64_ttfb_p50', label: 'new conn c64, TTFB p50', unit: 'ms', workload: 'new-c64', better: 'lower', digits: 3, read: us2ms('ttfbP50Us') },
  { id: 'new_c64_ttfb_p99', label: 'new conn c64, TTFB p99', unit: 'ms', workload: 'new-c64', better: 'lower', digits: 3, read: us2ms('ttfbP99Us') },
  { id: 'new_c64_cpu', label: 'new conn c64, proxy CPU', unit: 'µs/conn', workload: 'new-c64', better: 'lower', digits: 0, read: proxyCpuPerUnit },
  { id: 'new_c64_wrk_rate', label: 'new conn c64 wrk→nginx, rate', unit: 'conn/s', workload: 'new-c64-wrk', better: 'higher', digits: 0, read: (r) => num(r, 'connPerSec') },
  { id: 'new_c64_wrk_p50', label: 'new conn c64 wrk→nginx, latency p50', unit: 'ms', workload: 'new-c64-wrk', better: 'lower', digits: 3, read: us2ms('latencyP50Us') },
  { id: 'new_c64_wrk_p99', label: 'new conn c64 wrk→nginx, latency p99', unit: 'ms', workload: 'new-c64-wrk', better: 'lower', digits: 3, read: us2ms('latencyP99Us') },
  { id: 'new_c64_wrk_cpu', label: 'new conn c64 wrk→nginx, proxy CPU', unit: 'µs/conn', workload: 'new-c64-wrk', better: 'lower', digits: 0, read: proxyCpuPerUnit },
];

export interface CheckDef {
  id: string;
  label: string;
  /** 'ratio': median relay / median haproxy of `metric`; 'white-rss': white peak RSS (MiB) in kept workloads. */
  kind: 'ratio' | 'white-rss';
  metric?: string;
  op: '>=' | '<=' | '<';
  value: number;
}

export const CHECKS: readonly CheckDef[] = [
  { id: 'bulk_up_1', label: 'bulk upload 1 stream, relay/haproxy', kind: 'ratio', metric: 'bulk_up_1', op: '>=', value: 1.2 },
  { id: 'bulk_down_1', label: 'bulk download 1 stream, relay/haproxy', kind: 'ratio', metric: 'bulk_down_1', op: '>=', value: 1.2 },
  { id: 'kept_c64_rate', label: 'kept-conn rate c64, relay/haproxy', kind: 'ratio', metric: 'kept_c64_rate', op: '>=', value: 1.0 },
  { id: 'new_c64_rate', label: 'new-conn rate c64, relay/haproxy', kind: 'ratio', metric: 'new_c64_rate', op: '>=', value: 1.0 },
  { id: 'new_c64_cpu', label: 'new-conn CPU/conn c64, relay/haproxy', kind: 'ratio', metric: 'new_c64_cpu', op: '<=', value: 1.0 },
  { id: 'new_c64_wrk_rate', label: 'new-conn rate c64 wrk→nginx, relay/haproxy', kind: 'ratio', metric: 'new_c64_wrk_rate', op: '>=', value: 1.0 },
  { id: 'new_c64_wrk_cpu', label: 'new-conn CPU/conn c64 wrk→nginx, relay/haproxy', kind: 'ratio', metric: 'new_c64_wrk_cpu', op: '<=', value: 1.0 },
  { id: 'kept_c1_p99', label: 'RTT p99 c1, relay/haproxy', kind: 'ratio', metric: 'kept_c1_p99', op: '<=', value: 1.0 },
  { id: 'white_rss_kept', label: 'white peak RSS under kept-conn load (MiB)', kind: 'white-rss', op: '<', value: 60 },
];

export function passes(op: CheckDef['op'], x: number, limit: number): boolean {
  switch (op) {
    case '>=':
      return x >= limit;
    case '<=':
      return x <= limit;
    case '<':
      return x < limit;
  }
}

export function opSymbol(op: CheckDef['op']): string {
  return op === '>=' ? '≥' : op === '<=' ? '≤' : op;
}
