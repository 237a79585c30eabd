// What a gray reports about itself, for its status listener (/readyz, /metrics): one entry per
// white session (WhiteSessions), and the forwards they carry. A plain interface, so the listener
// does not depend on how the agent is built.

export interface GrayWhiteStatus {
  /** The address this session dials, host:port (a host name in `white:` gives one per address). */
  readonly white: string;
  readonly connected: boolean;
  /** Authenticated sessions since start (the first one included). */
  readonly sessions: number;
  /** Reconnect attempts scheduled after a failed connect or a lost session. */
  readonly reconnects: number;
  readonly poolIdle: number;
  /** The pool size the white asked for (0 while not connected). */
  readonly poolTarget: number;
}

export interface GrayStatus {
  readonly id: string;
  readonly whites: readonly GrayWhiteStatus[];
  readonly activeForwards: number;
  /** Forwards ended, with their bytes: from the white (clients) to the service, and back. */
  readonly forwardsTotal: number;
  readonly bytesToService: number;
  readonly bytesFromService: number;
  /** Forwards whose connect to the local service failed. */
  readonly serviceConnectFailures: number;
}

export interface GrayStatusSource {
  status(): GrayStatus;
}

/** Ready: every white connected, each with at least one idle pooled connection. */
export function grayReady(status: GrayStatus): boolean {
  return status.whites.length > 0 && status.whites.every((w) => w.connected && w.poolIdle > 0);
}
