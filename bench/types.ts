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

export interface IdleResult {
  kind: 'idle-open' | 'idle-release';
  opened: number;
  failed: number;
  seconds: number;
  firstError: string | null;
}

export type WorkloadResult = BulkResult | KeptResult | NewConnResult | IdleResult;

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
