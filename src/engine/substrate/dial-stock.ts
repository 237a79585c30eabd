// A session's stock an engine dials from by itself (native/stock.cc): the gray's pool with an
// engine. JavaScript gives out counters ahead of need and adds the explicit credits (WELCOME,
// GRANT); the engine signs each counter's preamble with the session's data key (handed over
// once, at open). It dials one connection per credit while it has counters, and counts the
// start header read on each of its connections as one more credit, so a consumed connection's
// successor is dialed the moment the header is in, with no JavaScript between. A dial that fails
// before its preamble was sent gives its counter back and holds the stock until release() (the
// caller's backoff).
// JavaScript keeps no object per connection here: it hears that one connected, went away idle,
// or read its start header (forwarded by the engine, or held for JavaScript to forward).
import { errnoError, pairEndOf, type Engine, type StockOwner } from './engine.js';
import type { EngineEventOf } from './events.js';
import type { Endpoint } from './dialed-conn.js';
import type { PairEnd } from './pair.js';

export interface StockHandlers {
  /** A connection dialed from the stock connected and wrote its preamble: it waits idle. */
  onConnected(): void;
  /** A dial failed before its preamble was sent; the stock is held until release(). */
  onFailed(error: Error): void;
  /** An idle connection went away (the white closed it, or the path broke); the engine closed it. */
  onClosed(): void;
  /** A connection read its start header, and the engine holds it for JavaScript to forward (no
   *  route for its service, or a header the engine does not forward): conn is the engine's
   *  held connection (DialedConn.held takes charge of it). */
  onHeld(conn: number, header: Buffer, credit: boolean): void;
  /** A connection read its start header and the engine forwarded it by itself. */
  onForwarded(forwarded: Forwarded): void;
  /** A pair the engine forwarded ended with END both ways, and its connection waits idle again
   *  for the next start header (native/engine.h, Framing); its onPairEnd follows. */
  onReused(): void;
  /** A pair the engine forwarded from one of the stock's connections ended. header: the start
   *  header, if it never reached the service. */
  onPairEnd(pair: number, end: PairEnd, reachedService: boolean, header: Buffer | null): void;
}

/** A start header the engine forwarded into pair by itself: the header is made a Buffer when
 *  read (most never are: only a debug log reads it). */
export interface Forwarded {
  readonly pair: number;
  readonly header: Buffer;
  /** The header is worth a successor (the engine dialed it). */
  readonly credit: boolean;
}

/** A session's keys as the engine signs with them: its session id (16 bytes), its data key (32). */
export interface StockKeys {
  readonly sessionId: Buffer;
  readonly dataKey: Buffer;
}

export class DialStock implements StockOwner {
  readonly id: number;
  private closed = false;
  /** Pairs the engine forwarded from this stock's connections and not yet ended: a count, not
   *  objects. A closed stock hears their ends until the last. */
  private livePairs = 0;

  /** to: the white's data port; routes: a service table to forward by as soon as a well-formed
   *  start header is in (see DialedConn.dial). Throws for arguments the engine refuses. */
  constructor(
    private readonly engine: Engine,
    to: Endpoint,
    keys: StockKeys,
    prefixBytes: number,
    private readonly handlers: StockHandlers,
    routes?: number,
  ) {
    const both = Buffer.concat([keys.sessionId, keys.dataKey]);
    this.id = routes !== undefined ? engine.handle.openStock(both, to.ip, to.port, prefixBytes, to.keepAliveSec, routes) : engine.handle.openStock(both, to.ip, to.port, prefixBytes, to.keepAliveSec);
    engine.addStock(this.id, this);
  }

  /** Appends count counters from firstCounter (used in this order) and adds credits: the
   *  engine dials at once. */
  add(firstCounter: number, count: number, credits: number): void {
    if (!this.closed && (count > 0 || credits > 0)) this.engine.handle.stock(this.id, firstCounter, count, credits, -1);
  }

  /** Lets the engine dial again after a failure held the stock. */
  release(): void {
    if (!this.closed) this.engine.handle.stock(this.id, 1, 0, 0, 0);
  }

  /** The session ended: the engine drops the counters left and closes the stock's
   *  connections that are not in a pair; nothing more is heard of them. */
  close(): void {
    if (this.closed) return;
    // Its pairs the engine forwarded a moment ago are counted first, so their ends still find it.
    this.engine.catchUp();
    this.closed = true;
    this.engine.handle.closeStock(this.id);
    if (this.livePairs === 0) this.engine.removeStock(this.id);
  }

  stockDialed(event: EngineEventOf<'dialed'>): void {
    if (this.closed) return;
    if (event.errno === 0) return this.handlers.onConnected();
    this.handlers.onFailed(errnoError(event.errno, 'connect'));
  }

  stockGone(): void {
    if (!this.closed) this.handlers.onClosed();
  }

  stockHeader(event: EngineEventOf<'header'>): void {
    if (event.pair !== 0) this.livePairs += 1;
    if (this.closed) {
      // Read just before the close reached the engine: nobody takes it now.
      if (event.pair !== 0) return this.engine.handle.destroy(event.pair);
      return this.engine.handle.closeConn(event.conn);
    }
    if (event.pair !== 0) return this.handlers.onForwarded(event);
    this.handlers.onHeld(event.conn, event.header, event.credit);
  }

  stockPairEnded(event: EngineEventOf<'pairEnd'>): void {
    this.livePairs -= 1;
    if (this.closed && this.livePairs === 0) this.engine.removeStock(this.id);
    if (event.reused && !this.closed) this.handlers.onReused();
    this.handlers.onPairEnd(event.pair, pairEndOf(event), !event.endedBeforeConnect, event.header);
  }
}
