// One native engine (native/, see engine.h): a thread with its own epoll set that listens,
// accepts, dials, holds and joins connections and moves the bytes of pairs. An Engine is made
// once at startup (openDataPlane) and passed to whoever needs it; every event it reports is
// decoded once (events.ts) and routed through this instance to the owner of its id: a pair, a
// listener, a held or dialed connection. Nothing here is module state, so several engines (one
// per thread) can live in one process.
import { createRequire } from 'node:module';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { decodeBatch, type EngineEvent, type EngineEventOf, type EventBatch } from './events.js';
import type { Heads, OnPairEnd, Pair, PairEnd } from './pair.js';

/** An engine's methods as the addon gives them (native/napi.cc). */
export interface EngineHandle {
  join(connA: number, connB: number, headToA: Buffer | null, headToB: Buffer | null): number;
  destroy(id: number): void;
  bytes(id: number): [number, number] | null;
  stats(): EngineStats;
  /** The events handed over and not yet heard (null: none), taken now instead of at the next call. */
  takeEvents(): EventBatch | null;
  listen(ip: string, port: number, backlog: number, prefixBytes: number, prefixTimeoutMs: number, keepAliveSec: number, watchAny: boolean, magic: Buffer | null, allow?: Buffer): [number, number];
  closeListener(id: number): void;
  filter(listenerId: number, mode: number, ip: string | null, maxPending: number): void;
  closeConn(id: number): void;
  /** With routes: forward by that service table as soon as a well-formed start header is read. */
  dial(ip: string, port: number, preamble: Buffer, prefixBytes: number, keepAliveSec: number, routes?: number): number;
  forward(connId: number, ip: string, port: number, headToService: Buffer | null, keepAliveSec: number): number;
  /** A gray's pool (native/lend.cc): the public listener's clients are served by the data
   *  listener's pool; a client JavaScript admitted is joined with an idle connection or waits in
   *  the pool; clients are joined at accept while the pool's pairs are below activeLimit.
   *  service: the index the public listener's start headers carry (the gray's for its service). */
  usePool(publicListenerId: number, dataListenerId: number, service: number): void;
  admit(clientId: number): void;
  activeLimit(dataListenerId: number, limit: number): void;
  /** A gray's data port checks preambles against this session from now on (keys: its session id
   *  then its data key; null: no session, every preamble refused). See native/verify.cc. */
  session(listenerId: number, epoch: number, keys: Buffer | null, refillLevel: number | null): void;
  /** The session's explicit credit limit (WELCOME's credits, then GRANT's up_to). */
  credits(listenerId: number, epoch: number, explicitUpTo: number): void;
  /** A session's stock the engine dials from by itself, signing each counter's preamble with
   *  keys (the session id then the data key): dial-stock.ts. */
  openStock(keys: Buffer, ip: string, port: number, prefixBytes: number, keepAliveSec: number, routes?: number): number;
  /** Appends count counters from firstCounter (used in this order), adds credits; hold 1 holds
   *  the stock, 0 releases it, -1 leaves it. */
  stock(stockId: number, firstCounter: number, count: number, credits: number, hold: -1 | 0 | 1): void;
  closeStock(stockId: number): void;
  /** A public port's allow-list: 18-byte records (family, prefix length, 16 address bytes). */
  setAllow(listenerId: number, networks: Buffer): void;
  /** A service table's routes by position, [ip, port, keepAliveSec] or null; [] forgets it. */
  setRoutes(table: number, routes: ReadonlyArray<readonly [string, number, number] | null>): void;
  /** The data listener's pool resets its pairs silent both ways for ms (0: never); see
   *  native/pool-pairs.cc. */
  idleTimeout(dataListenerId: number, ms: number): void;
  /** The live pairs of a public listener's clients, made on demand (native/pool-pairs.cc). */
  poolPairs(publicListenerId: number): PoolPairInfo[];
}

/** One live pair of a gray's pool, as poolPairs reports it. */
export interface PoolPairInfo {
  readonly pair: number;
  /** The client's connection id (the one its joinedLent named). */
  readonly conn: number;
  readonly ip: string;
  readonly port: number;
  readonly fromClient: number;
  readonly toClient: number;
  readonly ageMs: number;
}

interface Addon {
  /** onEvents hears every event queued since its last call, in one batch (events.ts), from
   *  threads engine threads (native/group.cc). holdMs: how long the engine may hold bookkeeping
   *  events before it wakes JavaScript for them (native/engine.h kEventHoldMs when undefined; 0:
   *  never held); an event JavaScript must act on posts at once with those held before it. */
  createEngine(onEvents: (...batch: EventBatch) => void, threads: number, holdMs?: number): EngineHandle;
  /** malloc_trim: free malloc pages back to the system (native/memory.cc). */
  trimMalloc(): void;
}

export interface EngineStats {
  /** Live pairs, pipes open (in use or free), connections held (not yet joined or closed). */
  readonly pairs: number;
  readonly pipes: number;
  readonly conns: number;
  /** The same pairs and held connections per engine thread, to see the load spread. */
  readonly threads: ReadonlyArray<{ readonly pairs: number; readonly conns: number }>;
}

/** engine.threads' bound (its default is one thread per core, at most this: data-plane.ts). */
export const ENGINE_THREADS_MAX = 16;

/** What owns a listener's events (listener.ts). */
export interface ListenerOwner {
  accepted(event: EngineEventOf<'accepted'>): void;
  /** A connection it reported that has no owner of its own went away. */
  gone?(event: EngineEventOf<'gone'>): void;
  refused(event: EngineEventOf<'refused'>): void;
  failed(event: EngineEventOf<'listenerError'>): void;
}

/** What owns the pairs of a public listener's clients (listener.ts): the engine joined them
 *  from the gray's pool, and each reports only its start and its end. */
export interface PoolPairOwner {
  joinedLent(event: EngineEventOf<'joinedLent'>): void;
  poolPairEnd(event: EngineEventOf<'poolPairEnd'>): void;
}

/** What owns a stock's events: a connection the engine dialed from it connected or failed, went
 *  away idle, read its start header (forwarded by the engine or not), and the end of a pair it
 *  was forwarded into. */
export interface StockOwner {
  stockDialed(event: EngineEventOf<'dialed'>): void;
  stockGone(event: EngineEventOf<'gone'>): void;
  stockHeader(event: EngineEventOf<'header'>): void;
  stockPairEnded(event: EngineEventOf<'pairEnd'>): void;
}

/** What owns a held or dialed connection's events. pair: for a header the engine forwarded. */
export interface ConnOwner {
  connEvent(event: EngineEventOf<'gone' | 'dialed' | 'header'>, pair: EnginePair | null): void;
}

/** From dist/src/engine/substrate/ to the package root: node-gyp-build takes build/Release
 *  there (built from source) or else the prebuilt binary under native/prebuilds/. */
const NATIVE_DIR = fileURLToPath(new URL('../../../../native', import.meta.url));

interface LoadedAddon {
  readonly addon: Addon;
  /** The addon file that was loaded (built here or prebuilt). */
  readonly modulePath: string;
}

/** The addon, or why it cannot be had. Node caches the module, so this loads it once. */
function loadAddon(): LoadedAddon | string {
  if (process.platform !== 'linux') return `splice(2) is Linux only (this is ${process.platform})`;
  let modulePath: string | null = null;
  try {
    const require = createRequire(import.meta.url);
    modulePath = (require('node-gyp-build') as { resolve(dir: string): string }).resolve(NATIVE_DIR);
    return { addon: require(modulePath) as Addon, modulePath };
  } catch (err) {
    return `${modulePath ?? NATIVE_DIR}: ${err instanceof Error ? err.message.replace(/\s+/g, ' ').trim() : String(err)}`;
  }
}

export class Engine {
  readonly handle: EngineHandle;
  private readonly pairs = new Map<number, EnginePair>();
  private readonly listeners = new Map<number, ListenerOwner>();
  private readonly conns = new Map<number, ConnOwner>();
  private readonly stocks = new Map<number, StockOwner>();
  private readonly poolPairOwners = new Map<number, PoolPairOwner>();

  private constructor(
    private readonly addon: Addon,
    /** The addon file this engine came from (built here or prebuilt). */
    readonly modulePath: string,
    /** How many engine threads it runs (engine.threads). */
    readonly threads: number,
    holdMs: number | undefined,
  ) {
    this.handle = addon.createEngine((...batch) => this.hear(batch), threads, holdMs);
  }

  /** Starts the engine's threads (1 unless told), or returns why there can be none (no addon,
   *  not Linux). holdMs: see Addon.createEngine (the engine's default when undefined). */
  static open(threads = 1, holdMs?: number): Engine | string {
    const loaded = loadAddon();
    if (typeof loaded === 'string') return loaded;
    try {
      return new Engine(loaded.addon, loaded.modulePath, threads, holdMs);
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
  }

  stats(): EngineStats {
    return this.handle.stats();
  }

  /** Hears now the events the engine holds back as bookkeeping (native/engine.h kEventHoldMs),
   *  so the books are current before a decision that reads them (a stop: whom to drain). */
  catchUp(): void {
    // Called from a handler, the rest of the batch being heard comes first: nothing is taken.
    if (this.hearing) return;
    const batch = this.handle.takeEvents();
    if (batch) this.hear(batch);
  }

  private hearing = false;

  private hear(batch: EventBatch): void {
    this.hearing = true;
    try {
      for (const event of decodeBatch(...batch)) this.route(event);
    } finally {
      this.hearing = false;
    }
  }

  /** Gives malloc's free pages back to the system (the whole process's, not only this engine's). */
  trimMalloc(): void {
    this.addon.trimMalloc();
  }

  addListener(id: number, owner: ListenerOwner): void {
    this.listeners.set(id, owner);
  }

  removeListener(id: number): void {
    this.listeners.delete(id);
  }

  /** Who hears of the pool pairs of public listener id: kept past the listener's close while
   *  its pairs run, so their ends are still counted. */
  addPoolPairOwner(id: number, owner: PoolPairOwner): void {
    this.poolPairOwners.set(id, owner);
  }

  removePoolPairOwner(id: number): void {
    this.poolPairOwners.delete(id);
  }

  addConn(id: number, owner: ConnOwner): void {
    this.conns.set(id, owner);
  }

  connOwner(id: number): ConnOwner | undefined {
    return this.conns.get(id);
  }

  removeConn(id: number): void {
    this.conns.delete(id);
  }

  addStock(id: number, owner: StockOwner): void {
    this.stocks.set(id, owner);
  }

  removeStock(id: number): void {
    this.stocks.delete(id);
  }

  /** A pair the engine started: onEnd hears its end (see EnginePair). */
  track(id: number, baseA = 0, baseB = 0): EnginePair {
    const pair = new EnginePair(this, id, baseA, baseB);
    this.pairs.set(id, pair);
    return pair;
  }

  /** Joins two held connections (side a, side b): nothing to hand over. */
  join(connA: number, connB: number, heads: Heads, onEnd: OnPairEnd): Pair {
    return this.track(this.handle.join(connA, connB, heads.toA ?? null, heads.toB ?? null)).onEnd(onEnd);
  }

  private route(event: EngineEvent): void {
    switch (event.type) {
      case 'pairEnd': {
        const pair = this.pairs.get(event.pair);
        // A pair forwarded from a stock's connection has no object here: its stock counts it.
        if (!pair) return event.stock !== 0 ? this.stocks.get(event.stock)?.stockPairEnded(event) : undefined;
        this.pairs.delete(event.pair);
        return pair.end(event);
      }
      case 'accepted': {
        const listener = this.listeners.get(event.listener);
        if (!listener) return this.handle.closeConn(event.conn);  // its port was closed meanwhile
        return listener.accepted(event);
      }
      case 'refused':
        return this.listeners.get(event.listener)?.refused(event);
      case 'listenerError':
        return this.listeners.get(event.listener)?.failed(event);
      case 'joinedLent': {
        const owner = this.poolPairOwners.get(event.listener);
        if (!owner) return this.handle.destroy(event.pair);  // nobody to count it: its port is gone
        return owner.joinedLent(event);
      }
      case 'poolPairEnd':
        return this.poolPairOwners.get(event.listener)?.poolPairEnd(event);
      case 'header': {
        if (event.stock !== 0) {
          const stock = this.stocks.get(event.stock);
          if (stock) return stock.stockHeader(event);
          if (event.pair !== 0) this.handle.destroy(event.pair);
          return;
        }
        const pair = event.pair !== 0 ? this.track(event.pair) : null;
        const owner = this.conns.get(event.conn);
        // Destroyed while the engine was forwarding it: the pair it made has nobody, so it ends.
        if (!owner) return pair?.destroy();
        return owner.connEvent(event, pair);
      }
      case 'dialed':
        // One the engine dialed from a stock has no owner of its own yet: the stock gives it one.
        if (event.stock !== 0) return this.stocks.get(event.stock)?.stockDialed(event);
        return this.conns.get(event.conn)?.connEvent(event, null);
      case 'gone': {
        const owner = this.conns.get(event.conn);
        // An idle connection of a stock, or a pooled one of a listener, has no owner of its own:
        // its stock or its listener hears it.
        if (!owner) return event.stock !== 0 ? this.stocks.get(event.stock)?.stockGone(event) : this.listeners.get(event.listener)?.gone?.(event);
        return owner.connEvent(event, null);
      }
    }
  }
}

/** A pair running on an engine. Its end goes to the handler given with onEnd, with whether it
 *  ended before its side B (a service) answered and whether its framed data connection was kept
 *  (native/engine.h, Framing); an end that comes first waits for it (a pair the engine joined by
 *  itself is reported before anyone takes charge of it). */
export type EnginePairEndHandler = (end: PairEnd, endedBeforeConnect: boolean, reused: boolean) => void;
export class EnginePair implements Pair {
  readonly plane = 'splice' as const;
  private ended: [PairEnd, boolean, boolean] | null = null;
  private handler: EnginePairEndHandler | null = null;
  private last: [number, number] = [0, 0];

  constructor(
    private readonly engine: Engine,
    readonly id: number,
    private readonly baseA: number,
    private readonly baseB: number,
  ) {}

  onEnd(handler: EnginePairEndHandler): this {
    this.handler = handler;
    if (this.ended) handler(...this.ended);
    return this;
  }

  end(event: EngineEventOf<'pairEnd'>): void {
    const end = pairEndOf(event);
    this.ended = [{ ...end, bytesFromA: this.baseA + end.bytesFromA, bytesFromB: this.baseB + end.bytesFromB }, event.endedBeforeConnect, event.reused];
    this.handler?.(...this.ended);
  }

  private live(): [number, number] {
    return (this.last = this.engine.handle.bytes(this.id) ?? this.last);
  }

  bytesFromA(): number {
    return this.baseA + this.live()[0];
  }

  bytesFromB(): number {
    return this.baseB + this.live()[1];
  }

  destroy(): void {
    this.engine.handle.destroy(this.id);
  }
}

const ECANCELED = os.constants.errno.ECANCELED;

/** A pair's end as both planes report it: the counts, and the error unless it ended in order or
 *  by destroy(). */
export function pairEndOf(event: EngineEventOf<'pairEnd'>): PairEnd {
  const error = event.errno === 0 || event.errno === ECANCELED ? null : errnoError(event.errno, 'splice');
  return { bytesFromA: event.bytesFromA, bytesFromB: event.bytesFromB, error };
}
const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([name, value]) => [value, name]));

/** What ended a pair, from the errno of its end: none for an orderly end or destroy(). */
export function pairError(errno: number): Error | null {
  return errno === 0 || errno === ECANCELED ? null : errnoError(errno, 'splice');
}

/** An Error for an errno the engine reported, shaped like Node's system errors. */
export function errnoError(errno: number, syscall: string): Error {
  const name = errnoNames.get(errno) ?? `errno ${errno}`;
  return Object.assign(new Error(`${syscall} ${name}`), { code: name, errno: -errno, syscall });
}

/** The code (EADDRINUSE...) of an exception the addon threw for a failed system call. */
export function codeOfThrown(err: unknown): string | undefined {
  const errno = (err as { errno?: unknown } | null)?.errno;
  return typeof errno === 'number' ? errnoNames.get(errno) : undefined;
}
