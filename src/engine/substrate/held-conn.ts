// A held connection on the white, before it is joined: an Internet client (maybe waiting for a
// data connection) or a verified, idle data connection of the pool. An engine holds it
// (EngineConn), or on the JS plane a Node socket is it (SocketConn). The pool broker sees only
// this interface.
import type { GoneReason } from './events.js';
import type { Heads, Pair, OnPairEnd } from './pair.js';

export type { GoneReason } from './events.js';

/**
 * What a watch reports: 'any' — a byte, a FIN or a reset (a pooled connection must stay silent
 * until it is used); 'reset' — only a reset or hang-up (a waiting client may send its request
 * and even half-close before it is paired; those bytes are kept for the pair).
 */
export type WatchMode = 'any' | 'reset';

export interface HeldConn {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  /** Bytes relay itself read from it before pairing (a data connection's preamble). */
  readonly preambleBytes: number;
  readonly destroyed: boolean;
  /** onGone runs at most once, when the peer does what the mode watches for; the connection
   *  is closed by then. Replaces an earlier watch. */
  watch(mode: WatchMode, onGone: (reason: GoneReason) => void): void;
  unwatch(): void;
  /** Closes it with a reset (a refused client must not take a FIN for an empty answer); never
   *  calls a watch. */
  destroy(): void;
  /** Joins this connection (side a) with another of the same kind (side b). */
  joinWith(other: HeldConn, heads: Heads, onClosed: OnPairEnd): Pair;
}
