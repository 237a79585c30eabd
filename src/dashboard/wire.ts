// What the dashboard's endpoints send to the page, shared by the server (feed.ts) and the page
// (page/app.ts). Types only: the page imports it with `import type`, so nothing of it runs there.
//
// Everything here is built field by field from the white's snapshot and events; no field of the
// config is copied wholesale, so a secret (gray secrets, tokens, hook URLs) has no way in.

export interface GrayRow {
  readonly id: string;
  readonly online: boolean;
  /** Epoch ms: when the current session authenticated, or when the gray was last seen going
   *  offline (the white's start, or the reload that added it, if it never connected since). */
  readonly since: number;
  /** Address of the control connection while online. */
  readonly remote: string | null;
  readonly publicPort: number;
  readonly dataPort: number;
  readonly poolIdle: number;
  readonly poolTarget: number;
  readonly activeClients: number;
  readonly pendingClients: number;
  readonly clientsTotal: number;
  /** Bytes from clients to the gray's service, and back. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly lastError: string | null;
}

export interface Totals {
  readonly grays: number;
  readonly online: number;
  readonly activeClients: number;
  readonly poolIdle: number;
  readonly poolTarget: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly authFailures: number;
  readonly reloadsOk: number;
  readonly reloadsRejected: number;
}

export type EventKind = 'gray.connected' | 'gray.disconnected' | 'gray.auth_failed' | 'config.reloaded' | 'config.rejected';

export interface EventRow {
  /** Increasing number of the event on this white. */
  readonly n: number;
  readonly at: number;
  readonly kind: EventKind;
  readonly grayId: string | null;
  /** One line for a person: the remote address, the reason, what a reload changed. */
  readonly text: string;
}

/** One traffic sample: bytes (in plus out) each gray moved during the sample interval; grays
 *  that moved nothing are left out. `k` counts samples on this white, so a gap is visible. */
export interface TrafficSample {
  readonly k: number;
  readonly at: number;
  readonly values: Readonly<Record<string, number>>;
}

export interface TrafficHistory {
  readonly intervalMs: number;
  /** How many samples a sparkline shows. */
  readonly points: number;
  /** `k` of the newest sample (0 before the first). */
  readonly lastK: number;
  /** Oldest first, `points` long, for the grays that moved anything in that window. */
  readonly series: Readonly<Record<string, readonly number[]>>;
}

/** `GET /api/state`, and the `state` event of the stream. */
export interface FullState {
  /** Random per white process: a stream position from another process is worthless. */
  readonly epoch: string;
  readonly seq: number;
  /** The white's clock, epoch ms, so the page can show "since" without trusting its own. */
  readonly now: number;
  readonly startedAt: number;
  readonly version: string;
  readonly totals: Totals;
  readonly grays: readonly GrayRow[];
  /** Newest last. */
  readonly events: readonly EventRow[];
  readonly traffic: TrafficHistory;
}

/** The `delta` event of the stream: what changed since the position the page last had. */
export interface Delta {
  readonly seq: number;
  readonly now: number;
  readonly totals: Totals;
  /** Changed or new rows, whole. */
  readonly grays: readonly GrayRow[];
  /** Present when grays were added or removed: every id there is now. */
  readonly ids?: readonly string[];
  readonly events: readonly EventRow[];
  readonly samples: readonly TrafficSample[];
}
