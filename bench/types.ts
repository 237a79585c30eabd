// Messages between the harness and the load generator child, and the shape of each result.
// Kept in one file so both sides are checked against the same types.

export type Workload =
  | {
      kind: 'bulk';
      dir: 'up' | 'down';
      streams: number;
      seconds: number;
      /** Count bound per stream, so the loop stops by itself even if time checks were starved. */
      maxBytesPerStream: number;
    }
  | {
      kind: 'kept';
      conns: number;
      seconds: number;
      /** Requests in this first part are made but not recorded (connect + JIT warm-up). */
      warmupSeconds: number;
      maxRequests: number;
      msgBytes: number;
    }
  | {
      kind: 'newconn';
      concurrency: number;
      seconds: number;
      warmupSeconds: number;
      maxConnections: number;
      msgBytes: number;
    }
  | {
      /** Scale mode: open `conns` connections, prove each one end to end, and hold them. */
      kind: 'idle-open';
      conns: number;
      connectConcurrency: number;
      timeoutSeconds: number;
    }
  | { kind: 'idle-release' };

export interface BulkResult {
  kind: 'bulk';
  /** Aggregate over all streams, decimal megabytes (1e6 bytes) per second. */
  mbPerSec: number;
  bytes: number;
  seconds: number;
  streamsOk: number;
  errors: number;
  firstError: string | null;
}

export interface KeptResult {
  kind: 'kept';
  reqPerSec: number;
  requests: number;
  seconds: number;
  rttP50Us: number;
  rttP99Us: number;
  errors: number;
  firstError: string | null;
}

export interface NewConnResult {
  kind: 'newconn';
  connPerSec: number;
  connections: number;
  seconds: number;
  ttfbP50Us: number;
  ttfbP99Us: number;
  errors: number;
  firstError: string | null;
}

/**
 * The C load generator: `wrk` against nginx, each request on a new TCP connection
 * (`Connection: close`). Run by the harness itself (bench/wrk.ts), not by the Node load generator.
 */
export interface WrkWorkload {
  kind: 'wrk';
  concurrency: number;
  threads: number;
  /** wrk takes whole seconds: the measurement time rounded, at least 1. */
  seconds: number;
  /** An unmeasured wrk run of this many whole seconds before each measurement (0: none). */
  warmupSeconds: number;
  /** Count bound: each wrk thread stops after its share of this many requests. */
  maxConnections: number;
}

export interface WrkResult {
  kind: 'wrk';
  /** Completed responses per second; each one is a new TCP connection through the target. */
  connPerSec: number;
  connections: number;
  seconds: number;
  /** wrk's latency: from writing the request on a connected socket to the complete response. */
  latencyP50Us: number;
  latencyP99Us: number;
  /** wrk's socket errors (connect, read, write, timeout) and non-2xx/3xx responses. */
  errors: number;
  firstError: string | null;
}

export interface IdleResult {
  kind: 'idle-open' | 'idle-release';
  opened: number;
  failed: number;
  seconds: number;
  firstError: string | null;
}

export type WorkloadResult = BulkResult | KeptResult | NewConnResult | IdleResult | WrkResult;

export interface RunRequest {
  type: 'run';
  id: number;
  port: number;
  workload: Workload;
}

export type LoadgenReply =
  | { type: 'ready' }
  | { type: 'result'; id: number; result: WorkloadResult }
  | { type: 'failed'; id: number; error: string };
