// How connections arrive on one gray's port pair. Two implementations: Node's listeners
// (node-intake.ts) and the native engine's (native-intake.ts), which accepts, filters and reads
// the preamble without making a Node socket. Both hand the same checks to GrayEndpoint (verify)
// and the same HeldConns to the pool broker.
import type { ErrorCode } from '../../errors.js';
import type { HeldConn } from '../data-plane/held-conn.js';
import type { JoinedPair, OnPairClosed } from '../data-plane/joined-pair.js';
import type { GraySession } from './gray-session.js';

export type Verdict = { ok: true; session: GraySession } | { ok: false; code: ErrorCode; detail: string };

/** What an intake needs from its endpoint. */
export interface IntakeOwner {
  readonly grayId: string;
  readonly bind: string;
  readonly publicPort: number;
  readonly dataPort: number;
  readonly dataSourceCheck: boolean;
  /** TCP keepalive delay on public-port client sockets; 0: none. */
  readonly clientKeepAliveMs: number;
  readonly preambleTimeoutMs: number;
  readonly keepAliveDelayMs: number;
  readonly unverifiedLimit: number;
  currentSession(): GraySession | null;
  /** Checks a complete preamble from remoteAddress. */
  verify(remoteAddress: string | undefined, preamble: Buffer): Verdict;
  onClient(client: HeldConn): void;
  onVerified(data: HeldConn, session: GraySession): void;
  /** The engine paired a client with a lent connection (see Lender); adopt takes charge of the
   *  running pair. data is undefined if it was closed meanwhile on this side. */
  onLentPaired(client: HeldConn, data: HeldConn | undefined, adopt: (onClosed: OnPairClosed) => JoinedPair): void;
  /** Counts and logs a refused connection; closes it when there is one. */
  refuse(conn: HeldConn | null, remote: string | undefined, code: ErrorCode, detail: string): void;
  /** A listener cannot accept for a moment (out of descriptors): worth a warning. */
  listenerTrouble(detail: string): void;
}

/** Pairing in the native engine (native/lend.cc): an idle, verified connection lent to the public
 *  port is paired with the next client there without JavaScript. */
export interface Lender {
  /** False when it cannot be lent (the port is not listening): keep it. */
  lend(conn: HeldConn): boolean;
  /** Pairs an admitted client with a lent connection (reported by onLentPaired), or onNone. */
  pairLent(client: HeldConn, onNone: () => void): void;
}

export interface PortIntake {
  /** Present when the intake can pair in the engine. */
  readonly lender?: Lender;
  listen(): Promise<void>;
  /** The ports actually bound (they differ from the entry's when it asked for port 0). */
  readonly ports: { publicPort: number; dataPort: number };
  /** The gray's session changed: who may open data connections changes with it. */
  sessionChanged(): void;
  /** Stops accepting on both ports. */
  close(): void;
}
