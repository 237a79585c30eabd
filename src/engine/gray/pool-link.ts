// One pooled data connection as the pool dialer sees it, whichever plane opens it: a connection
// an engine dials from its stock of preambles and holds (engine-link.ts), or a Node socket on
// the JS plane, opened per preamble (socket-link.ts). The dialer owns the counters and credits;
// a link only connects, writes its preamble, waits for the white's start header and, once
// activated, forwards to the client's local service.
import type { GrayConfig, GrayService } from '../../config/types.js';
import type { Logger } from '../../log.js';
import type { RateLimitedLog } from '../../rate-limited-log.js';
import type { PairEnd } from '../substrate/pair.js';
import type { Forwarded } from '../substrate/dial-stock.js';
import type { ClientAddressInfo } from '../protocol/start-header.js';

export interface LinkEvents {
  /** Connected and the preamble written: the link is idle in the pool. */
  connected(): void;
  /** The connection could not be made and nothing was sent: its counter is unspent. */
  failed(error: Error): void;
  /** The white wrote the start header (exactly START_HEADER_BYTES): forward it now. */
  activated(header: Buffer): void;
  /** Closed before activation: the white recycled it, or the path broke. */
  closed(): void;
}

export interface PoolLink {
  /** Connects an activated link to the client's service and joins the two. */
  forward(client: ClientAddressInfo, service: GrayService, onClosed: (result: PairEnd | null) => void): Forward;
  destroy(): void;
}

/** Opens one link to the white's data port with this preamble. Events come asynchronously. */
export type OpenLink = (preamble: Buffer, events: LinkEvents) => PoolLink;

/** With an engine, the links are dialed by the engine itself from a stock (substrate/dial-stock.ts):
 *  one per credit while it has counters, each with a preamble the engine signs, and a successor
 *  at once for every start header. No object stands for an idle one: the events below count them. */
export interface PoolStock {
  /** Appends count counters from firstCounter (used in this order) and adds explicit credits. */
  add(firstCounter: number, count: number, credits: number): void;
  /** Lets the engine dial again after a failure held the stock (the end of a backoff). */
  release(): void;
  /** Drops the counters left and closes the links not yet forwarded: the session ended.
   *  Pairs the engine forwarded live on, and their ends are still reported. */
  close(): void;
  /** Ends a pair the engine forwarded (StockEvents.forwarded). */
  destroyPair(pair: number): void;
}

export interface StockEvents {
  /** A link dialed from the stock connected: one more idle in the pool. */
  connected(): void;
  /** An idle link went away: the white recycled it, or the path broke. */
  closed(): void;
  /** A link read its start header (exactly START_HEADER_BYTES) and is held: forward it now.
   *  credit: the header is worth a successor, which the engine has dialed (a framed header may
   *  not be: native/engine.h, Framing). */
  activated(link: PoolLink, header: Buffer, credit: boolean): void;
  /** A link read its start header and the engine forwarded it into pair by itself (a well-formed
   *  header, see native/dial.cc); pairEnded reports that pair's end. */
  forwarded(forwarded: Forwarded): void;
  /** A pair the engine forwarded ended cleanly and its framed link waits idle again for the
   *  next start header (reported before pairEnded). */
  reused(): void;
  /** A dial failed before anything was sent; the stock holds until release(). */
  failed(error: Error): void;
  /** A pair the engine forwarded ended (a failed connect to the service is already logged). */
  pairEnded(pair: number, end: PairEnd): void;
}

/** Opens a session's stock: keys are the session's (its id, its data key), which sign the
 *  preambles. */
export type OpenStock = (keys: { readonly sessionId: Buffer; readonly dataKey: Buffer }, events: StockEvents) => PoolStock;

/** What every link needs besides its preamble. */
export interface LinkContext {
  readonly config: GrayConfig;
  readonly logger: Logger;
  readonly warnings: RateLimitedLog;
  /** The white's data port. */
  readonly port: number;
  /** With an engine: a service's target as the IP address resolved for it. */
  readonly targetIp?: (service: GrayService) => string;
  /** With an engine's stock: the service at a start header's index in the session's table (to
   *  log a forward the engine made whose connect failed). */
  readonly serviceAt?: (index: number) => GrayService | undefined;
  /** Counts a forward whose connect to the local service failed. */
  readonly serviceUnreachable?: () => void;
}

/** One client being forwarded, from activation until both sides closed. */
export interface Forward {
  readonly closed: Promise<void>;
  destroy(): void;
}
