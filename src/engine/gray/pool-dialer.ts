// Keeps the gray's pool of pre-opened data connections: one connection per credit the white has
// granted, each opened with a preamble that proves it belongs to this session. An idle one
// waits for the white's start header; once it arrives the connection is handed to the
// forwarder and the white (which consumed it) grants a replacement at once. How a connection is
// opened and forwarded is the link's business (pool-link.ts); the counters and credits are here.
// With an engine the engine dials: this hands it preambles ahead of need (a stock at most
// STOCK_LEAD counters past the credits known here) and the explicit credits, and the engine
// spends one implicit credit per start header by itself.
import type { GrayConfig } from '../../config/types.js';
import type { Logger } from '../../log.js';
import { Backoff } from '../backoff.js';
import { encodePreamble } from '../protocol/preamble.js';
import { decodeStartHeader, type StartHeaderFields } from '../protocol/start-header.js';
import type { PairEnd } from '../substrate/pair.js';
import type { LinkEvents, OpenLink, OpenStock, PoolLink, PoolStock } from './pool-link.js';

/** How the pool's connections are opened (one per preamble on the JS plane, or from an
 *  engine's stock), and where they go (host:port, for logs). */
export type PoolLinks = { readonly where: string } & ({ readonly open: OpenLink; readonly stock?: undefined } | { readonly stock: OpenStock; readonly open?: undefined });

/** Preambles handed to an engine's stock beyond the credits known here: the start headers the
 *  engine may answer with a successor before JavaScript has heard of them. Bounded, since each
 *  is a counter given out ahead; topped up once STOCK_TOP_UP of them were used, so JavaScript
 *  crosses to the engine once per STOCK_TOP_UP connections rather than once per connection. */
export const STOCK_LEAD = 32;
export const STOCK_TOP_UP = 8;

export type PoolDialerOptions = PoolLinks & {
  readonly sessionId: Buffer;
  readonly dataKey: Buffer;
  readonly poolTarget: number;
  readonly config: GrayConfig;
  readonly logger: Logger;
  readonly onActivated: (link: PoolLink, client: StartHeaderFields) => void;
  /** With an engine's stock: the engine forwarded a link into pair by itself (no object for it
   *  here), and later that pair ended. */
  readonly onForwarded: (pair: number, client: StartHeaderFields) => void;
  readonly onForwardEnded: (pair: number, end: PairEnd) => void;
  readonly onPoolReady: (idle: number) => void;
};

export class PoolDialer {
  /** Explicit credits (WELCOME, GRANT) plus one implicit credit per activation: see
   *  GraySession on the white for why both sides can count the implicit ones on their own. */
  private explicitUpTo = 0;
  private activations = 0;
  private nextCounter = 1;
  private readonly idle = new Set<PoolLink>();
  private readonly dialing = new Set<PoolLink>();
  private readonly backoff: Backoff;
  private retryTimer: NodeJS.Timeout | null = null;
  /** Counters whose dial failed before anything was sent: safe to use again. */
  private readonly retryCounters: number[] = [];
  private stopped = false;
  private readyReported = false;
  /** With an engine: its stock, and the explicit credits not yet handed to it. */
  private readonly stock: PoolStock | null;
  private creditsToHand = 0;

  constructor(private readonly o: PoolDialerOptions) {
    this.backoff = new Backoff(o.config.limits.reconnectBaseMs, o.config.limits.reconnectMaxMs);
    this.stock = o.stock
      ? o.stock({
          connected: (adopt) => this.adopted(adopt),
          failed: (err) => this.scheduleRetry(err),
          // Also after stop(): forwards outlive their session.
          pairEnded: (pair, end) => o.onForwardEnded(pair, end),
        })
      : null;
  }

  /** The counters given out so far (for tests: never more than the credits plus STOCK_LEAD). */
  get countersGiven(): number {
    return this.nextCounter - 1;
  }

  get idleCount(): number {
    return this.idle.size;
  }

  grant(upTo: number): void {
    if (upTo > this.explicitUpTo) {
      this.creditsToHand += upTo - this.explicitUpTo;
      this.explicitUpTo = upTo;
    }
    this.fill();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.stock?.close();
    for (const link of this.idle) link.destroy();
    for (const link of this.dialing) link.destroy();
    this.idle.clear();
    this.dialing.clear();
  }

  private fill(): void {
    if (this.stopped) return;
    if (this.stock) return this.topUp(this.stock);
    if (this.retryTimer) return;
    while (this.retryCounters.length > 0) this.dial(this.retryCounters.shift()!);
    const limit = this.explicitUpTo + this.activations;
    while (this.nextCounter <= limit) this.dial(this.nextCounter++);
  }

  /** Hands the engine the explicit credits it has not had and preambles up to STOCK_LEAD past
   *  the credits known here, in one call, once STOCK_TOP_UP are missing (or credits wait). */
  private topUp(stock: PoolStock): void {
    const upTo = this.explicitUpTo + this.activations + STOCK_LEAD;
    if (this.creditsToHand === 0 && upTo - this.countersGiven < STOCK_TOP_UP) return;
    const preambles: Buffer[] = [];
    while (this.nextCounter <= upTo) preambles.push(encodePreamble(this.o.sessionId, this.nextCounter++, this.o.dataKey));
    stock.add(preambles, this.creditsToHand);
    this.creditsToHand = 0;
  }

  /** A link the engine dialed from the stock connected. */
  private adopted(adopt: (events: LinkEvents) => PoolLink): void {
    if (this.stopped) return;
    const link = adopt(this.linkEvents(() => link, null));
    this.connected(link);
  }

  private connected(link: PoolLink): void {
    this.dialing.delete(link);
    if (this.stopped) return link.destroy();
    this.backoff.reset();
    this.idle.add(link);
    if (!this.readyReported && this.idle.size >= this.o.poolTarget) {
      this.readyReported = true;
      this.o.onPoolReady(this.idle.size);
    }
  }

  private dial(counter: number): void {
    const link: PoolLink = this.o.open!(encodePreamble(this.o.sessionId, counter, this.o.dataKey), this.linkEvents(() => link, counter));
    this.dialing.add(link);
  }

  /** counter: the link's, when this dialed it (the JS plane); null for one from the stock,
   *  whose header the engine already counted as a credit and answered with a successor. */
  private linkEvents(self: () => PoolLink, counter: number | null): LinkEvents {
    return {
      connected: () => this.connected(self()),
      failed: (err) => {
        this.dialing.delete(self());
        if (this.stopped || counter === null) return;
        // Nothing was sent, so the counter was never seen by the white: retry it after a delay.
        this.retryCounters.push(counter);
        this.scheduleRetry(err);
      },
      activated: (header) => {
        const link = self();
        this.idle.delete(link);
        // Every header the white wrote is a credit it counted; the engine has already used it.
        if (counter === null) this.activations += 1;
        let client: StartHeaderFields;
        try {
          client = decodeStartHeader(header);
        } catch (err) {
          this.o.logger.warn({ detail: (err as Error).message }, 'invalid start header from white');
          if (counter === null) this.fill();
          return link.destroy();
        }
        // The start header is our replacement credit: dial the successor before forwarding.
        if (counter !== null) this.activations += 1;
        this.fill();
        this.o.onActivated(link, client);
      },
      // Closed while idle: the white recycled it or the path broke. The white grants a
      // replacement when it sees the close; nothing to do here.
      closed: () => {
        this.idle.delete(self());
      },
      // From the stock, forwarded by the engine (which also dialed the successor).
      forwarded: (header, pair) => {
        this.idle.delete(self());
        this.activations += 1;
        this.fill();
        let client: StartHeaderFields;
        try {
          client = decodeStartHeader(header);
        } catch (err) {
          this.o.logger.warn({ detail: (err as Error).message }, 'invalid start header from white');
          return this.stock?.destroyPair(pair);
        }
        this.o.onForwarded(pair, client);
      },
    };
  }

  private scheduleRetry(err: Error): void {
    if (this.retryTimer || this.stopped) return;
    const delay = this.backoff.next();
    this.o.logger.warn({ detail: err.message, retryInMs: delay, data: this.o.where }, 'data connection failed');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.stock) this.stock.release();
      this.fill();
    }, delay);
  }
}
