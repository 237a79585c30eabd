// A stock of preambles an engine dials from by itself (native/stock.cc): the gray's pool with an
// engine. JavaScript computes the preambles ahead of need and adds credits (WELCOME, GRANT);
// the engine dials one per credit while it has preambles, and counts the start header read on
// each of its connections as one more credit, so a consumed connection's successor is dialed
// the moment the header is in, with no JavaScript between. A dial that fails before its
// preamble was sent puts it back and holds the stock until release() (the caller's backoff).
// JavaScript hears of each connection once it connected (or failed), and takes charge of it then.
import { errnoError, pairEndOf, type Engine, type StockOwner } from './engine.js';
import type { EngineEventOf } from './events.js';
import type { Endpoint } from './dialed-conn.js';
import type { PairEnd } from './pair.js';

export interface StockHandlers {
  /** A connection dialed from the stock connected and wrote its preamble: id is the engine's
   *  held connection (DialedConn.adopt takes charge of it). */
  onConnected(id: number): void;
  /** A dial failed before its preamble was sent; the stock is held until release(). */
  onFailed(error: Error): void;
  /** A pair the engine forwarded from one of the stock's connections ended (DialHandlers
   *  onForwarded told of it). header: the start header, if it never reached the service. */
  onPairEnd(pair: number, end: PairEnd, reachedService: boolean, header: Buffer | null): void;
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
    private readonly preambleBytes: number,
    prefixBytes: number,
    private readonly handlers: StockHandlers,
    routes?: number,
  ) {
    this.id = routes !== undefined ? engine.handle.openStock(to.ip, to.port, prefixBytes, to.keepAliveSec, routes) : engine.handle.openStock(to.ip, to.port, prefixBytes, to.keepAliveSec);
    engine.addStock(this.id, this);
  }

  /** Appends preambles (used in this order) and adds credits: the engine dials at once. */
  add(preambles: readonly Buffer[], credits: number): void {
    if (this.closed || (preambles.length === 0 && credits === 0)) return;
    for (const p of preambles) {
      if (p.length !== this.preambleBytes) throw new Error(`a preamble is ${p.length} bytes, the stock's are ${this.preambleBytes}`);
    }
    this.engine.handle.stock(this.id, preambles.length > 0 ? Buffer.concat(preambles) : null, this.preambleBytes, credits, -1);
  }

  /** Lets the engine dial again after a failure held the stock. */
  release(): void {
    if (!this.closed) this.engine.handle.stock(this.id, null, this.preambleBytes, 0, 0);
  }

  /** The session ended: the engine drops the preambles left and closes the stock's connections
   *  that are not in a pair; nothing more is heard of them. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.engine.handle.closeStock(this.id);
    if (this.livePairs === 0) this.engine.removeStock(this.id);
  }

  stockDialed(event: EngineEventOf<'dialed'>): void {
    if (this.closed) return;
    if (event.errno === 0) return this.handlers.onConnected(event.conn);
    this.handlers.onFailed(errnoError(event.errno, 'connect'));
  }

  /** The connection's owner (DialedConn.adopt) hears its header; a pair made of it counts here. */
  stockHeader(event: EngineEventOf<'header'>): void {
    if (event.pair !== 0) this.livePairs += 1;
    const owner = this.engine.connOwner(event.conn);
    if (owner) return owner.connEvent(event, null);
    if (event.pair !== 0) this.engine.handle.destroy(event.pair);
  }

  stockPairEnded(event: EngineEventOf<'pairEnd'>): void {
    this.livePairs -= 1;
    if (this.closed && this.livePairs === 0) this.engine.removeStock(this.id);
    this.handlers.onPairEnd(event.pair, pairEndOf(event), !event.endedBeforeConnect, event.header);
  }
}
