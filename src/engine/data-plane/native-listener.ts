// A listening port owned by the native engine: it accepts on the engine thread, applies the
// filter set here (who may connect, how many may still be reading their prefix), reads a
// fixed-size prefix under a deadline, and only then reports the connection, which the engine
// holds until it is joined or closed (EngineConn). No Node socket is ever made for it. A public
// port can also be lent held data connections (lend): the engine then pairs a client with one
// the moment it accepts it, and reports the pair (onPaired).
import { ErrorCodes, RelayError } from '../../errors.js';
import type { GoneReason, HeldConn, WatchMode } from './held-conn.js';
import type { Heads, JoinedPair, OnPairClosed } from './joined-pair.js';
import { codeOfThrown, EngineEvent, errnoError, nativeEngine, onNativeConnEvent, type NativeBinding } from './native-engine.js';
import { adoptEnginePair, joinHeldInEngine } from './splice-plane.js';

/** Why the engine refused a connection by itself (Refusal in the addon). */
export type Refusal = 'no-session' | 'wrong-source' | 'too-many' | 'timeout' | 'ended' | 'error' | 'bad-magic' | 'extra';
const refusals: Record<number, Refusal> = { 1: 'no-session', 2: 'wrong-source', 3: 'too-many', 4: 'timeout', 5: 'ended', 6: 'error', 7: 'bad-magic', 8: 'extra' };

export interface NativeListenerOptions {
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
}

/** A pair the engine made of a client and a lent connection: take charge of its end. */
export type AdoptPair = (onClosed: OnPairClosed) => JoinedPair;

export interface NativeListenerHandlers {
  onConnection(conn: EngineConn, prefix: Buffer): void;
  /** The engine paired client with the lent connection data (see lend); the pair is running. */
  onPaired?(client: EngineConn, data: EngineConn | undefined, adopt: AdoptPair): void;
  /** received: the prefix bytes read before the refusal. */
  onRefused(refusal: Refusal, remoteIp: string, detail: { remotePort: number; received: Buffer; error: Error | null }): void;
  onError(error: Error): void;
}

export type ListenerFilter = { readonly mode: 'anyone' } | { readonly mode: 'nobody' } | { readonly mode: 'only'; readonly ip: string };

const listeners = new Map<number, NativeListener>();
const conns = new Map<number, EngineConn>();
/** Clients for which pairLent is under way: what to do if the engine has none. */
const noneLentHandlers = new Map<number, () => void>();

onNativeConnEvent((type, id, listenerId, code, a, b, prefix, remoteIp, remotePort, localIp, localPort) => {
  if (type === EngineEvent.gone) return conns.get(id)?.onGone(code === 2 ? 'data' : 'closed');
  if (type === EngineEvent.paired) {
    noneLentHandlers.delete(a);
    const adopted = adoptEnginePair(id);
    const listener = listeners.get(listenerId);
    // A client JavaScript admitted (pairLent) is known already; one paired at accept is new.
    const client = conns.get(a) ?? new EngineConn(a, 'reset', remoteIp ?? '', remotePort ?? 0, localIp ?? '', localPort ?? 0);
    const data = conns.get(b);
    client.joinedByEngine();
    data?.joinedByEngine();
    if (!listener?.handlers.onPaired) return adopted.pair.destroy();  // its port was closed meanwhile
    listener.handlers.onPaired(client, data, (onClosed) => {
      adopted.onClosed((result) => onClosed(result));
      return adopted.pair;
    });
    return;
  }
  if (type === EngineEvent.noneLent) {
    const handler = noneLentHandlers.get(id);
    noneLentHandlers.delete(id);
    return handler?.();
  }
  const listener = listeners.get(listenerId);
  if (type === EngineEvent.accepted) {
    if (!listener) return nativeEngine()?.closeConn(id);  // its port was closed meanwhile
    const conn = new EngineConn(id, listener.watchMode, remoteIp ?? '', remotePort ?? 0, localIp ?? '', localPort ?? 0);
    conns.set(id, conn);
    listener.handlers.onConnection(conn, prefix ?? Buffer.alloc(0));
  } else if (type === EngineEvent.refused) {
    const refusal = refusals[code] ?? 'error';
    listener?.handlers.onRefused(refusal, remoteIp ?? '', { remotePort: remotePort ?? 0, received: prefix ?? Buffer.alloc(0), error: b !== 0 ? errnoError(b, 'recv') : null });
  } else if (type === EngineEvent.listenerError) {
    listener?.handlers.onError(errnoError(code, 'accept'));
  }
});

export function nativeListenAvailable(): boolean {
  return nativeEngine() !== null;
}

export class NativeListener {
  private readonly native: NativeBinding;
  private readonly id: number;
  readonly port: number;
  readonly watchMode: WatchMode;
  private closed = false;

  /** Binds at once; throws RELAY_ERR_LISTEN naming `what` when the port cannot be had. */
  constructor(
    options: NativeListenerOptions,
    readonly handlers: NativeListenerHandlers,
    what: string,
  ) {
    const native = nativeEngine();
    if (!native) throw new Error('the native engine is not loaded');
    this.native = native;
    this.watchMode = options.watch;
    try {
      [this.id, this.port] = native.listen(options.host, options.port, 511, options.prefixBytes, options.prefixTimeoutMs, options.keepAliveSec, options.watch === 'any', options.prefixMagic ?? null);
    } catch (err) {
      const code = codeOfThrown(err);
      const message = code ? `listen ${code}: ${(err as Error).message}` : String(err);
      throw new RelayError(ErrorCodes.LISTEN, `cannot listen on ${options.host}:${options.port} (${what}): ${message}`, { cause: err });
    }
    listeners.set(this.id, this);
  }

  /** Who may connect at all, checked before a byte is read; maxPending caps the connections
   *  still reading their prefix (the rest are refused as 'too-many'). */
  setFilter(filter: ListenerFilter, maxPending: number): void {
    if (this.closed) return;
    const mode = filter.mode === 'anyone' ? 0 : filter.mode === 'nobody' ? 1 : 2;
    this.native.filter(this.id, mode, filter.mode === 'only' ? filter.ip : null, maxPending);
  }

  /** Lends a held connection (of another listener, such as the data port) to this port: the
   *  engine pairs it with a client it accepts here, and reports that with onPaired. From now on
   *  only the engine may join it; closing it (destroy) is how it is taken back. */
  lend(conn: EngineConn): boolean {
    if (this.closed || conn.destroyed) return false;
    conn.lent = true;
    this.native.lend(this.id, conn.id);
    return true;
  }

  /** Pairs a held client of this port with one of its lent connections (reported by onPaired),
   *  or calls onNone when the engine has none left. */
  pairLent(client: EngineConn, onNone: () => void): void {
    if (this.closed || client.destroyed) return onNone();
    noneLentHandlers.set(client.id, onNone);
    client.unwatch();
    this.native.pairLent(this.id, client.id);
  }

  /** Stops accepting; connections still reading their prefix are closed, reported ones stay. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    listeners.delete(this.id);
    this.native.closeListener(this.id);
  }
}

export class EngineConn implements HeldConn {
  private watcher: ((reason: GoneReason) => void) | null = null;
  private state: 'held' | 'joined' | 'closed' = 'held';
  /** Lent to a public port (NativeListener.lend): only the engine may join it now. */
  lent = false;
  readonly preambleBytes = 0;  // the engine read the prefix outside the pair's counts

  constructor(
    readonly id: number,
    /** What the engine watches this connection for: its listener's mode, fixed at accept. */
    private readonly watchMode: WatchMode,
    readonly remoteAddress: string,
    readonly remotePort: number,
    /** '' and 0 for a connection that sent a prefix (a data connection): only a client's local
     *  address is needed, for its start header, so the engine does not ask for the others. */
    readonly localAddress: string,
    readonly localPort: number,
  ) {}

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
    conns.delete(this.id);
    nativeEngine()?.closeConn(this.id);
  }

  /** The engine closed it (its peer left, or spoke when it must not). */
  onGone(reason: GoneReason): void {
    if (this.state !== 'held') return;
    this.state = 'closed';
    conns.delete(this.id);
    const watcher = this.watcher;
    this.watcher = null;
    watcher?.(reason);
  }

  /** The engine joined it by itself (a lent connection, or the client it was paired with). */
  joinedByEngine(): void {
    this.state = 'joined';
    this.watcher = null;
    conns.delete(this.id);
  }

  joinWith(other: HeldConn, heads: Heads, onClosed: OnPairClosed): JoinedPair {
    if (!(other instanceof EngineConn)) throw new TypeError('an engine connection can only be joined with another engine connection');
    // The engine may be pairing a lent one with a client right now: it is not ours to join.
    if (this.lent || other.lent) throw new Error(`connection ${this.lent ? this.id : other.id} is lent to the engine: it cannot be joined here`);
    for (const conn of [this, other]) {
      conn.state = 'joined';
      conn.watcher = null;
      conns.delete(conn.id);
    }
    return joinHeldInEngine(this.id, other.id, heads, onClosed);
  }
}
