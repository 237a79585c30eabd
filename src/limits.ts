// Every limit relay enforces, in one place, with units in the names and the reason beside each.
// The white and gray configs may override some of them (`limits:` key); the values here are the
// defaults. docs/security.md lists them for users; each one has a test that crosses it.

export const DEFAULT_LIMITS = Object.freeze({
  /** TLS handshake must complete within this time after TCP accept (slowloris on the control port). */
  handshakeTimeoutMs: 5_000,
  /** From TLS established to authenticated session. Bounds how long a stranger holds a slot. */
  authTimeoutMs: 5_000,
  /** Control frame payload before authentication: HELLO and proofs are tiny. */
  frameMaxBytesBeforeAuth: 1024,
  /** Control frame payload after authentication. */
  frameMaxBytesAfterAuth: 64 * 1024,
  /** Unauthenticated control connections from one source IP at once. */
  unauthenticatedPerIp: 16,
  /** Unauthenticated control connections in total; past half of it new ones are refused at random
   *  with growing probability (the way OpenSSH's MaxStartups does), at the limit always. */
  unauthenticatedTotal: 256,
  /** First auth-failure penalty for a source IP; doubles with each further failure up to the max. */
  authFailurePenaltyBaseMs: 250,
  authFailurePenaltyMaxMs: 30_000,
  /** A data connection must deliver its whole preamble within this time. */
  preambleTimeoutMs: 3_000,
  /** Unverified connections on one gray's data port at once (before the preamble arrives). */
  unverifiedDataPerPort: 256,
  /** Clients waiting for a pooled connection, per gray. Past it new clients are closed at once. */
  pendingClientsPerGray: 1024,
  /** How long one client may wait for a pooled connection. */
  clientWaitMs: 10_000,
  /** Active client connections per gray. */
  activeClientsPerGray: 10_000,
  /** Upper bound on the idle pool a gray may ask for. */
  poolMax: 256,
  /** Upper bound on data connections the white lets a gray have in flight (granted, not yet arrived). */
  inFlightMax: 64,
  /** An idle pooled connection older than this is recycled (closed and replaced). */
  poolIdleMaxMs: 5 * 60_000,
  /** TCP keepalive probe delay for pooled and control sockets. */
  keepAliveDelayMs: 30_000,
  /** TCP keepalive on public-port client sockets (the white's `client_keep_alive`, on by
   *  default): a client silent this long is probed once a second, and after 10 unanswered probes
   *  its pair ends with a reset, freeing its descriptors on white and gray. Without it a client
   *  whose network vanished holds them forever. */
  clientKeepAliveDelayMs: 60_000,
  /** Heartbeat interval on the control channel; the peer is declared dead after heartbeatMissed intervals. */
  heartbeatIntervalMs: 5_000,
  heartbeatMissed: 3,
  /** Graceful shutdown: how long active client connections may continue after SIGTERM. */
  drainTimeoutMs: 10_000,
  /** Gray reconnect backoff: base, cap (jitter is applied to each delay). */
  reconnectBaseMs: 250,
  reconnectMaxMs: 30_000,
  /** Webhook delivery. */
  hookTimeoutMs: 5_000,
  hookQueueLength: 1_000,
  hookResponseMaxBytes: 64 * 1024,
  hookMaxAttempts: 6,
});

export type Limits = { -readonly [K in keyof typeof DEFAULT_LIMITS]: number };

export function resolveLimits(overrides: Partial<Limits> | undefined): Readonly<Limits> {
  return Object.freeze({ ...DEFAULT_LIMITS, ...(overrides ?? {}) });
}
