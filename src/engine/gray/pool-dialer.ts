// Keeps the gray's pool of pre-opened data connections: one connection per credit the white has
// granted, each opened with a preamble that proves it belongs to this session. An idle one
// waits for the white's start header; once it arrives the connection is handed to the
// forwarder and the white (which consumed it) grants a replacement at once. How a connection is
// opened and forwarded is the link's business (pool-link.ts); the counters and credits are here.
import type { GrayConfig } from '../../config/types.js';
import type { Logger } from '../../log.js';
import { Backoff } from '../backoff.js';
import { encodePreamble } from '../protocol/preamble.js';
import { decodeStartHeader, type StartHeaderFields } from '../protocol/start-header.js';
import type { OpenLink, PoolLink } from './pool-link.js';

/** How the pool's connections are opened, and where they go (host:port, for logs). */
export interface PoolLinks {
  readonly open: OpenLink;
  readonly where: string;
}

export interface PoolDialerOptions extends PoolLinks {
  readonly sessionId: Buffer;
  readonly dataKey: Buffer;
  readonly poolTarget: number;
  readonly config: GrayConfig;
  readonly logger: Logger;
  readonly onActivated: (link: PoolLink, client: StartHeaderFields) => void;
  readonly onPoolReady: (idle: number) => void;
}

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

  constructor(private readonly o: PoolDialerOptions) {
    this.backoff = new Backoff(o.config.limits.reconnectBaseMs, o.config.limits.reconnectMaxMs);
  }

  get idleCount(): number {
    return this.idle.size;
  }

  grant(upTo: number): void {
    if (upTo > this.explicitUpTo) this.explicitUpTo = upTo;
    this.fill();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    for (const link of this.idle) link.destroy();
    for (const link of this.dialing) link.destroy();
    this.idle.clear();
    this.dialing.clear();
  }

  private fill(): void {
    if (this.stopped || this.retryTimer) return;
    while (this.retryCounters.length > 0) this.dial(this.retryCounters.shift()!);
    const limit = this.explicitUpTo + this.activations;
    while (this.nextCounter <= limit) this.dial(this.nextCounter++);
  }

  private dial(counter: number): void {
    const link: PoolLink = this.o.open(encodePreamble(this.o.sessionId, counter, this.o.dataKey), {
      connected: () => {
        this.dialing.delete(link);
        if (this.stopped) return link.destroy();
        this.backoff.reset();
        this.idle.add(link);
        if (!this.readyReported && this.idle.size >= this.o.poolTarget) {
          this.readyReported = true;
          this.o.onPoolReady(this.idle.size);
        }
      },
      failed: (err) => {
        this.dialing.delete(link);
        if (this.stopped) return;
        // Nothing was sent, so the counter was never seen by the white: retry it after a delay.
        this.retryCounters.push(counter);
        this.scheduleRetry(err);
      },
      activated: (header) => {
        this.idle.delete(link);
        let client: StartHeaderFields;
        try {
          client = decodeStartHeader(header);
        } catch (err) {
          this.o.logger.warn({ detail: (err as Error).message }, 'invalid start header from white');
          return link.destroy();
        }
        // The start header is our replacement credit: dial the successor before forwarding.
        this.activations += 1;
        this.fill();
        this.o.onActivated(link, client);
      },
      // Closed while idle: the white recycled it or the path broke. The white grants a
      // replacement when it sees the close; nothing to do here.
      closed: () => {
        this.idle.delete(link);
      },
    });
    this.dialing.add(link);
  }

  private scheduleRetry(err: Error): void {
    if (this.retryTimer || this.stopped) return;
    const delay = this.backoff.next();
    this.o.logger.warn({ detail: err.message, retryInMs: delay, data: this.o.where }, 'data connection failed');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.fill();
    }, delay);
  }
}
