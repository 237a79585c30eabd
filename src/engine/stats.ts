import { Histogram } from './histogram.js';

// Live counters kept by the white. Plain numeric fields, mutated in place: the data path only
// does `stats.x += n` at connection boundaries (never per chunk). Metrics and `relayctl show`
// read snapshots of these at request time.

export interface GrayStats {
  connectedSince: number | null; // epoch ms of the current session's auth, null when offline
  remoteAddress: string | null;
  poolIdle: number;
  poolTarget: number;
  poolRefill: number; // refilled below this many idle: the target, or half of it when data connections are reused
  activeClients: number;
  pendingClients: number;
  clientsTotal: number;
  idleTimeouts: number; // pairs ended by the gray's idle_timeout_ms
  dataConnectionsReused: number; // taken back into the pool after a client (framed sessions)
  bytesFromClients: number; // counted when a pair closes, plus live pairs at snapshot time
  bytesToClients: number;
  /** Clients on the public port refused or dropped before pairing, by reason code. */
  clientsRefused: Record<string, number>;
  /** Seconds an admitted client waited for a pooled data connection (0 when one was idle). */
  readonly clientWait: Histogram;
  lastError: string | null;
  /** Both ports listening. False until the first bind, and while a failed one is retried. */
  portsBound: boolean;
  /** Why the last bind failed (the OS error), null once bound. */
  listenError: string | null;
  bindFailures: number;
  /** By service name: the same counts for each of the gray's services. */
  perService: Record<string, ServiceStats>;
}

export interface ServiceStats {
  activeClients: number;
  clientsTotal: number;
  bytesFromClients: number;
  bytesToClients: number;
  /** Clients of this service refused or dropped before pairing, by reason code. */
  clientsRefused: Record<string, number>;
}

export interface ServiceSnapshot extends ServiceStats {
  name: string;
  publicPort: number;
  /** The allow-list as written; empty: anyone. */
  allow: string[];
}

export interface WhiteCounters {
  authFailures: number;
  dataRejections: Record<string, number>; // data-port connections, by reason code
  controlRejections: Record<string, number>;
  reloads: { ok: number; rejected: number };
  /** notApplied: what the white does not run as the file says (a setting that needs a restart,
   *  a port that cannot be bound yet), one "key: why" line each. */
  lastReload: { at: number; ok: boolean; error: string | null; notApplied?: string[] } | null;
}

export interface GraySnapshot extends GrayStats {
  id: string;
  publicPort: number;
  dataPort: number;
  connected: boolean;
  /** The gray's services with their ports and counts (absent in snapshots from before services). */
  services?: ServiceSnapshot[];
}

export interface WhiteSnapshot {
  configPath: string | null;
  startedAt: number;
  grays: GraySnapshot[];
  counters: WhiteCounters;
  hooks: Array<{ url: string; delivered: number; failed: number; dropped: number; queued: number; lastError: string | null }>;
}

export function newGrayStats(): GrayStats {
  return {
    connectedSince: null,
    remoteAddress: null,
    poolIdle: 0,
    poolTarget: 0,
    poolRefill: 0,
    activeClients: 0,
    pendingClients: 0,
    clientsTotal: 0,
    idleTimeouts: 0,
    dataConnectionsReused: 0,
    bytesFromClients: 0,
    bytesToClients: 0,
    clientsRefused: {},
    clientWait: new Histogram(),
    lastError: null,
    portsBound: false,
    listenError: null,
    bindFailures: 0,
    perService: {},
  };
}

export function newServiceStats(): ServiceStats {
  return { activeClients: 0, clientsTotal: 0, bytesFromClients: 0, bytesToClients: 0, clientsRefused: {} };
}
