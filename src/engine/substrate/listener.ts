// A listening port owned by an engine: it accepts on the engine thread, applies the filter set
// here (who may connect, how many may still be reading their prefix), reads a fixed-size prefix
// under a deadline, and only then reports the connection, which the engine holds until it is
// joined or closed (EngineConn). No Node socket is ever made for it. A gray's data port holds
// the gray's pool (setSession, setCredits, setActiveLimit: the engine verifies preambles and
// keeps the verified connections), which its public port uses (usePool): the engine joins a
// client with a pooled connection by itself, and reports the pair (onJoinedLent) and, later, its
// end (onPoolPairEnd) with everything that end must report: no JavaScript object lives per pair,
// the live ones are listed on demand (poolPairs).
import { ErrorCodes, RelayError } from '../../errors.js';
import { FilterMode } from './codes.js';
import { encodeAllowList, type Cidr } from '../protocol/cidr.js';
import { codeOfThrown, errnoError, type ConnOwner, type Engine, type ListenerOwner, type PoolPairInfo, type PoolPairOwner } from './engine.js';
import type { EngineEventOf, GoneReason, Refusal } from './events.js';
import type { HeldConn, WatchMode } from './held-conn.js';
import type { Heads, OnPairEnd, Pair } from './pair.js';

export type { Refusal } from './events.js';

export interface ListenerOptions {
  /** An IP address (host names are resolved before an engine sees them). */
  readonly host: string;
  readonly port: number;
  /** Bytes read before the connection is reported (0: reported at accept). */
  readonly prefixBytes: number;
  /** What every prefix must start with; a connection is refused at its first wrong byte. */
  readonly prefixMagic?: Buffer;
  readonly prefixTimeoutMs: number;
  /** TCP keepalive idle time in seconds, 0 for none. */
  readonly keepAliveSec: number;
  /** How the engine watches a reported connection until it is joined (see WatchMode). */
  readonly watch: WatchMode;
  /** Who may connect, from the first accept on (see setAllow); absent or empty: anyone. */
  readonly allow?: readonly Cidr[];
}

/** A pair the engine joined of a client (its connection id: client) and a pooled connection
 *  (lent), as the engine reported it. */
export type JoinedLent = EngineEventOf<'joinedLent'>;

/** The end of a JoinedLent pair, as the engine reported it (errno: 0, or ECANCELED after
 *  destroy or the idle timeout: pairError says which is an error). */
export type PoolPairEnd = EngineEventOf<'poolPairEnd'>;

/** A data connection whose preamble the engine verified: its counter and its session's epoch. */
export interface Verified {
  readonly counter: number;
  readonly session: number;
}

export interface ListenerHandlers {
  /** verified: on a port with a session (setSession), the engine's check passed (prefix is then
   *  empty: there is nothing left to check in it). */
  onConnection(conn: EngineConn, prefix: Buffer, verified: Verified): void;
  /** With this, a data connection the engine verified is reported by its id and its session's
   *  epoch instead, and no object is made for it (a gray's pool: the engine holds it until it
   *  is joined, which onJoinedLent reports, or closed with closeConn; onGone hears if it goes). */
  onVerified?(conn: number, session: number, reused: boolean): void;
  /** A verified connection reported to onVerified went away (reason 'data': it spoke); the
   *  engine closed it. remoteIp: its source. */
  onGone?(conn: number, reason: GoneReason, remoteIp: string): void;
  /** The engine joined a client with a pooled connection (see usePool); the pair is running.
   *  client: the held client JavaScript admitted, undefined for one it never heard of (joined
   *  at accept) or closed meanwhile. */
  onJoinedLent?(joined: JoinedLent, client: EngineConn | undefined): void;
  onPoolPairEnd?(end: PoolPairEnd): void;
  /** received: the prefix bytes read before the refusal. */
  onRefused(refusal: Refusal, remoteIp: string, detail: { remotePort: number; received: Buffer; error: Error | null }): void;
  onError(error: Error): void;
}

export type ListenerFilter = { readonly mode: 'anyone' } | { readonly mode: 'nobody' } | { readonly mode: 'only'; readonly ip: string };

export class EngineListener implements ListenerOwner, PoolPairOwner {
  readonly id: number;
  readonly port: number;
  readonly watchMode: WatchMode;
  private closed = false;
  /** Pairs of this port's clients still running (counted from their start and end events). */
  private poolPairCount = 0;
  /** Pairs joined after this port was closed: ended at once, never reported. */
  private readonly strayPairs = new Set<number>();

  /** Binds at once; throws RELAY_ERR_LISTEN naming `what` when the port cannot be had. */
  constructor(
    readonly engine: Engine,
    options: ListenerOptions,
    readonly handlers: ListenerHandlers,
    what: string,
  ) {
    this.watchMode = options.watch;
    try {
      [this.id, this.port] = engine.handle.listen(options.host, options.port, 511, options.prefixBytes, options.prefixTimeoutMs, options.keepAliveSec, options.watch === 'any', options.prefixMagic ?? null, encodeAllowList(options.allow ?? []));
    } catch (err) {
      const code = codeOfThrown(err);
      const message = code ? `listen ${code}: ${(err as Error).message}` : String(err);
      throw new RelayError(ErrorCodes.LISTEN, `cannot listen on ${options.host}:${options.port} (${what}): ${message}`, { cause: err });
    }
    engine.addListener(this.id, this);
    if (handlers.onJoinedLent) engine.addPoolPairOwner(this.id, this);
  }

  /** Pairs of this port's clients running now (on a public port that usePool). */
  get livePairs(): number {
    return this.poolPairCount;
  }

  /** The running pairs of this port's clients, asked of the engine now. */
  poolPairs(): PoolPairInfo[] {
    return this.engine.handle.poolPairs(this.id);
  }

  /** Ends every running pair of this port's clients; each end is still reported. */
  destroyPoolPairs(): void {
    for (const p of this.poolPairs()) this.engine.handle.destroy(p.pair);
  }

  /** On a data port: the gray's idle timeout for its pool's pairs (null: none). */
  setIdleTimeout(ms: number | null): void {
    if (this.closed) return;
    this.engine.handle.idleTimeout(this.id, Math.min(ms ?? 0, 0xffff_ffff));
  }

  /** Who may connect at all, checked before a byte is read; maxPending caps the connections
   *  still reading their prefix (the rest are refused as 'too-many'). */
  setFilter(filter: ListenerFilter, maxPending: number): void {
    if (this.closed) return;
    this.engine.handle.filter(this.id, FilterMode[filter.mode], filter.mode === 'only' ? filter.ip : null, maxPending);
  }

  /** Makes this a gray's data port whose preambles the engine checks (native/verify.cc) against
   *  the session numbered epoch (keys: session id then data key), or refuses them all (null). A
   *  verified connection is reported with its counter and epoch. refillLevel: the session's data
   *  connections are framed and go back to the pool after each pair, and a join is worth a
   *  successor only while fewer are idle (null: raw, each used once; native/engine.h, Framing). */
  setSession(epoch: number, keys: Buffer | null, refillLevel: number | null = null): void {
    if (this.closed) return;
    this.engine.handle.session(this.id, epoch, keys, refillLevel);
  }

  /** The current session's explicit credit limit (the engine counts the implicit ones). */
  setCredits(epoch: number, explicitUpTo: number): void {
    if (this.closed) return;
    this.engine.handle.credits(this.id, epoch, explicitUpTo);
  }

  /** This public port's clients are served by the pool of dataPort (a gray's data port), their
   *  start headers naming service (the gray's index for this port's service in its session:
   *  called again whenever that index changes); null: by none, every client is reported. */
  usePool(dataPort: EngineListener | null, service: number): void {
    if (this.closed) return;
    this.engine.handle.usePool(this.id, dataPort?.id ?? 0, service);
  }

  /** Who may connect to this port, checked at accept before a byte is read (refused as
   *  'not-allowed'); an empty list lets anyone in. */
  setAllow(list: readonly Cidr[]): void {
    if (this.closed) return;
    this.engine.handle.setAllow(this.id, encodeAllowList(list));
  }

  /** On a data port: how many of the pool's pairs may run before clients stop being joined at
   *  accept (then JavaScript hears of each client and admits it). */
  setActiveLimit(limit: number): void {
    if (this.closed) return;
    this.engine.handle.activeLimit(this.id, limit);
  }

  /** Joins a held client (of a public port using this data port's pool), which JavaScript
   *  admitted, with a pooled connection now or as soon as one is verified (reported by
   *  onJoinedLent). Until then it waits, watched. */
  admit(client: EngineConn): void {
    if (this.closed || client.destroyed) return;
    this.engine.handle.admit(client.id);
  }

  /** Stops accepting; connections still reading their prefix are closed, reported ones stay. */
  close(): void {
    if (this.closed) return;
    // Its pairs the engine joined a moment ago are counted first, so their ends still find it.
    this.engine.catchUp();
    this.closed = true;
    this.engine.removeListener(this.id);
    if (this.poolPairCount === 0) this.engine.removePoolPairOwner(this.id);
    this.engine.handle.closeListener(this.id);
  }

  accepted(event: EngineEventOf<'accepted'>): void {
    // Counter 0: a data connection back in the pool after its pair (native/engine.h, Framing).
    if (event.session !== 0 && this.handlers.onVerified) return this.handlers.onVerified(event.conn, event.session, event.counter === 0);
    const conn = new EngineConn(this.engine, event.conn, this.watchMode, event.remote.ip, event.remote.port, event.local?.ip ?? '', event.local?.port ?? 0);
    this.handlers.onConnection(conn, event.prefix, { counter: event.counter, session: event.session });
  }

  /** A held connection with no object of its own went away (one reported to onVerified). */
  gone(event: EngineEventOf<'gone'>): void {
    this.handlers.onGone?.(event.conn, event.reason, event.remote.ip);
  }

  /** Closes a held connection that has no object (one reported to onVerified); nothing is heard of it. */
  closeConn(conn: number): void {
    this.engine.handle.closeConn(conn);
  }

  refused(event: EngineEventOf<'refused'>): void {
    this.handlers.onRefused(event.refusal, event.remote.ip, { remotePort: event.remote.port, received: event.received, error: event.errno !== 0 ? errnoError(event.errno, 'recv') : null });
  }

  failed(event: EngineEventOf<'listenerError'>): void {
    this.handlers.onError(errnoError(event.errno, 'accept'));
  }

  joinedLent(event: EngineEventOf<'joinedLent'>): void {
    // A client JavaScript admitted is known already; one joined at accept never was, and no
    // object is made for it.
    const client = heldConn(this.engine, event.client);
    client?.joinedByEngine();
    heldConn(this.engine, event.lent)?.joinedByEngine();  // one reported to onConnection
    this.poolPairCount += 1;
    if (this.closed || !this.handlers.onJoinedLent) {
      this.strayPairs.add(event.pair);
      return this.engine.handle.destroy(event.pair);
    }
    this.handlers.onJoinedLent(event, client);
  }

  poolPairEnd(event: EngineEventOf<'poolPairEnd'>): void {
    this.poolPairCount -= 1;
    if (this.closed && this.poolPairCount === 0) this.engine.removePoolPairOwner(this.id);
    if (this.strayPairs.delete(event.pair)) return;
    this.handlers.onPoolPairEnd?.(event);
  }
}

/** A connection an engine holds before it is joined (accepted by an EngineListener). */
export class EngineConn implements HeldConn, ConnOwner {
  private watcher: ((reason: GoneReason) => void) | null = null;
  private state: 'held' | 'joined' | 'closed' = 'held';
  readonly preambleBytes = 0;  // the engine read the prefix outside the pair's counts

  constructor(
    private readonly engine: Engine,
    readonly id: number,
    /** What the engine watches this connection for: its listener's mode, fixed at accept. */
    private readonly watchMode: WatchMode,
    readonly remoteAddress: string,
    readonly remotePort: number,
    /** '' and 0 for a connection that sent a prefix (a data connection): only a client's local
     *  address is needed, for its start header, so the engine does not ask for the others. */
    readonly localAddress: string,
    readonly localPort: number,
  ) {
    engine.addConn(id, this);
  }

  get destroyed(): boolean {
    return this.state !== 'held';
  }

  /** The engine watches by itself, in its listener's mode; this only says who hears it. Asking
   *  for the other mode is a wiring mistake (the port was opened with the wrong watch), so it
   *  throws rather than silently watching for something else. */
  watch(mode: WatchMode, onGone: (reason: GoneReason) => void): void {
    if (mode !== this.watchMode) throw new TypeError(`connection ${this.id} is watched for '${this.watchMode}' by its listener, not '${mode}'`);
    this.watcher = onGone;
  }

  unwatch(): void {
    this.watcher = null;
  }

  destroy(): void {
    if (this.state !== 'held') return;
    this.state = 'closed';
    this.watcher = null;
    this.engine.removeConn(this.id);
    this.engine.handle.closeConn(this.id);
  }

  connEvent(event: EngineEventOf<'gone' | 'dialed' | 'header'>): void {
    if (event.type !== 'gone' || this.state !== 'held') return;
    // The engine closed it (its peer left, or spoke when it must not).
    this.state = 'closed';
    const watcher = this.watcher;
    this.watcher = null;
    this.engine.removeConn(this.id);
    watcher?.(event.reason);
  }

  /** The engine joined it by itself (a pooled connection, or the client it was joined with). */
  joinedByEngine(): void {
    this.state = 'joined';
    this.watcher = null;
    this.engine.removeConn(this.id);
  }

  joinWith(other: HeldConn, heads: Heads, onEnd: OnPairEnd): Pair {
    if (!(other instanceof EngineConn)) throw new TypeError('an engine connection can only be joined with another engine connection');
    for (const conn of [this, other]) {
      conn.state = 'joined';
      conn.watcher = null;
      this.engine.removeConn(conn.id);
    }
    return this.engine.join(this.id, other.id, heads, onEnd);
  }
}

function heldConn(engine: Engine, id: number): EngineConn | undefined {
  const owner = engine.connOwner(id);
  return owner instanceof EngineConn ? owner : undefined;
}
