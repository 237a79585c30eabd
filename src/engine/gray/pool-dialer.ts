// Keeps the gray's pool of pre-opened data connections: one connection per credit the white has
// granted, each opened with a preamble that proves it belongs to this session. An idle one
// waits for the white's start header; once it arrives the connection is handed to the
// forwarder and the white (which consumed it) grants a replacement at once. How a connection is
// opened and forwarded is the link's business (pool-link.ts); the counters and credits are here.
// With an engine the engine dials from the session's stock: this gives it counters ahead of need
// (at most STOCK_LEAD past the credits known here) and the explicit credits; the engine signs
// the preambles and spends one implicit credit per start header by itself, and this counts the
// idle connections, with no object for each.
import type { GrayConfig } from '../../config/types.js';
import { ErrorCodes } from '../../errors.js';
import type { Logger } from '../../log.js';
import { Backoff } from '../backoff.js';
import { encodePreamble } from '../protocol/preamble.js';
import { decodeStartHeader, type StartHeaderFields } from '../protocol/start-header.js';
import { EngineConstant } from '../substrate/codes.js';
import type { PairEnd } from '../substrate/pair.js';
import type { Forwarded } from '../substrate/dial-stock.js';
import { localPortsAdvice } from './local-ports.js';
import type { LinkEvents, OpenLink, OpenStock, PoolLink, PoolStock } from './pool-link.js';

/** Counters handed to an engine's stock beyond the credits known here: the start headers the
 *  engine may answer with a successor before JavaScript has heard of them. Bounded, since each
 *  is a counter given out ahead; topped up once STOCK_TOP_UP of them were used, so JavaScript
 *  crosses to the engine once per STOCK_TOP_UP connections rather than once per connection.
 *  Twice the engine's low-water mark: once half the lead is used the engine tells JavaScript at
 *  once, and the other half covers the time until JavaScript has topped the stock up. */
export const STOCK_LEAD = 2 * EngineConstant.stockLowWater;
export const STOCK_TOP_UP = 8;

/** How the pool's connections are opened (one per preamble on the JS plane, or from an
 *  engine's stock), and where they go (host:port, for logs). */
export type PoolLinks = { readonly where: string } & ({ readonly open: OpenLink; readonly stock?: undefined } | { readonly stock: OpenStock; readonly open?: undefined });

export type PoolDialerOptions = PoolLinks & {
  readonly sessionId: Buffer;
  readonly dataKey: Buffer;
  readonly poolTarget: number;
  readonly config: GrayConfig;
  readonly logger: Logger;
  readonly onActivated: (link: PoolLink, client: StartHeaderFields) => void;
  /** With an engine's stock: the engine forwarded a link into pair by itself (no object for it
   *  here; the engine checked its start header, decoded only if wanted), and later that pair
   *  ended. */
  readonly onForwarded: (forwarded: Forwarded) => void;
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
  /** With an engine: its stock, the explicit credits not yet handed to it, and how many of its
   *  connections wait idle (no object each). */
  private readonly stock: PoolStock | null;
  private creditsToHand = 0;
  private stockIdle = 0;

  constructor(private readonly o: PoolDialerOptions) {
    this.backoff = new Backoff(o.config.limits.reconnectBaseMs, o.config.limits.reconnectMaxMs);
    this.stock = o.stock
      ? o.stock({ sessionId: o.sessionId, dataKey: o.dataKey }, {
          connected: () => {
            if (this.stopped) return;
            this.stockIdle += 1;
            this.connectedOne();
          },
          closed: () => void (this.stockIdle -= 1),
          activated: (link, header, credit) => {
            this.stockIdle -= 1;
            if (credit) this.headerRead();
            this.activate(link, header);
          },
          forwarded: (forwarded) => {
            this.stockIdle -= 1;
            if (forwarded.credit) this.headerRead();
            this.o.onForwarded(forwarded);
          },
          reused: () => {
            if (!this.stopped) this.stockIdle += 1;
          },
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
    return this.stock ? this.stockIdle : this.idle.size;
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
    this.stockIdle = 0;
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

  /** Hands the engine the explicit credits it has not had and counters up to STOCK_LEAD past
   *  the credits known here, in one call, once STOCK_TOP_UP are missing (or credits wait). */
  private topUp(stock: PoolStock): void {
    const upTo = this.explicitUpTo + this.activations + STOCK_LEAD;
    if (this.creditsToHand === 0 && upTo - this.countersGiven < STOCK_TOP_UP) return;
    const first = this.nextCounter;
    this.nextCounter = Math.max(first, upTo + 1);
    stock.add(first, this.nextCounter - first, this.creditsToHand);
    this.creditsToHand = 0;
  }

  /** A connection from the stock read its start header: a credit the white counted and the
   *  engine already used for a successor. */
  private headerRead(): void {
    this.activations += 1;
    this.fill();
  }

  private connected(link: PoolLink): void {
    this.dialing.delete(link);
    if (this.stopped) return link.destroy();
    this.idle.add(link);
    this.connectedOne();
  }

  private connectedOne(): void {
    this.backoff.reset();
    if (!this.readyReported && this.idleCount >= this.o.poolTarget) {
      this.readyReported = true;
      this.o.onPoolReady(this.idleCount);
    }
  }

  private dial(counter: number): void {
    const link: PoolLink = this.o.open!(encodePreamble(this.o.sessionId, counter, this.o.dataKey), this.linkEvents(() => link, counter));
    this.dialing.add(link);
  }

  /** A link of the JS plane, opened with counter's preamble. */
  private linkEvents(self: () => PoolLink, counter: number): LinkEvents {
    return {
      connected: () => this.connected(self()),
      failed: (err) => {
        this.dialing.delete(self());
        if (this.stopped) return;
        // Nothing was sent, so the counter was never seen by the white: retry it after a delay.
        this.retryCounters.push(counter);
        this.scheduleRetry(err);
      },
      activated: (header) => {
        const link = self();
        this.idle.delete(link);
        this.activate(link, header);
      },
      // Closed while idle: the white recycled it or the path broke. The white grants a
      // replacement when it sees the close; nothing to do here.
      closed: () => {
        this.idle.delete(self());
      },
    };
  }

  /** A link read its start header: forward it. On the JS plane the header is the implicit
   *  credit for a successor, dialed first (an engine's stock has already dialed it). */
  private activate(link: PoolLink, header: Buffer): void {
    let client: StartHeaderFields;
    try {
      client = decodeStartHeader(header, this.stock !== null);
    } catch (err) {
      this.o.logger.warn({ detail: (err as Error).message }, 'invalid start header from white');
      return link.destroy();
    }
    if (!this.stock) {
      this.activations += 1;
      this.fill();
    }
    this.o.onActivated(link, client);
  }

  private scheduleRetry(err: Error): void {
    if (this.retryTimer || this.stopped) return;
    const delay = this.backoff.next();
    if ((err as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL') {
      const { detail, portRange, twReuse } = localPortsAdvice('data', this.o.where);
      this.o.logger.error({ code: ErrorCodes.LOCAL_PORTS_EXHAUSTED, detail, portRange, twReuse, retryInMs: delay, data: this.o.where }, 'no local port left for data connections');
    } else {
      this.o.logger.warn({ detail: err.message, retryInMs: delay, data: this.o.where }, 'data connection failed');
    }
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.stock?.release();
      this.fill();
    }, delay);
  }
}
