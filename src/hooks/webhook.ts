// Delivery of events to one configured webhook. The engine must never wait for a hook: enqueue()
// only appends to a bounded ring and schedules the sender; when the ring is full the oldest
// waiting event is dropped (the newest state of the world is the most useful one to deliver).
// One request at a time per hook, so a receiver sees events in the order they happened.
import { randomUUID } from 'node:crypto';
import type { HookConfig } from '../config/types.js';
import { ErrorCodes } from '../errors.js';
import { DEFAULT_LIMITS } from '../limits.js';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../rate-limited-log.js';
import type { WhiteSnapshot } from '../engine/stats.js';
import {
  DEFAULT_USER_AGENT,
  HookClient,
  bodyExcerpt,
  parseHookUrl,
  requestHeaders,
  retryAfterMs,
  type HookTarget,
  type PostOutcome,
} from './transport.js';

/** An event ready to send: serialized once, shared by every hook that wants it. */
export interface HookEvent {
  readonly id: string;
  readonly type: string;
  /** The exact JSON body; signed byte for byte. */
  readonly body: string;
}

export type WebhookStats = WhiteSnapshot['hooks'][number];

export interface WebhookOptions {
  logger: Logger;
  /** Events waiting to be sent (not counting the one in flight). Default limits.hookQueueLength. */
  queueLength?: number;
  /** Attempts per event, the first included. Default limits.hookMaxAttempts. */
  maxAttempts?: number;
  /** Response body bytes read before the connection is dropped. Default limits.hookResponseMaxBytes. */
  responseMaxBytes?: number;
  /** First retry delay; doubles per attempt up to backoffMaxMs. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Source of jitter in [0, 1); injectable so tests get exact delays. */
  random?: () => number;
  /** Connections in the pool for this hook's origin. */
  connections?: number;
  userAgent?: string;
  /** At most one "dropped" / "failed" warning per this interval. */
  warnIntervalMs?: number;
}

export const DEFAULT_BACKOFF_BASE_MS = 1_000;
export const DEFAULT_BACKOFF_MAX_MS = 30_000;

/**
 * Retry delay after the `failures`-th failed attempt (1-based): an exponential step d with
 * "equal jitter", d/2 + random·d/2. Jitter spreads retries of many whites hitting one receiver
 * after an outage; keeping the lower half fixed means every delay is at least the whole previous
 * step, so delays still grow.
 */
export function backoffDelayMs(failures: number, baseMs: number, maxMs: number, random: () => number): number {
  const step = Math.min(maxMs, baseMs * 2 ** Math.max(0, failures - 1));
  return Math.round(step / 2 + random() * (step / 2));
}

/** Fixed-capacity FIFO: push and shift are O(1) whatever the length (Array#shift is not). */
class Ring<T> {
  private readonly items: Array<T | undefined>;
  private head = 0;
  private size = 0;

  constructor(readonly capacity: number) {
    this.items = new Array<T | undefined>(capacity);
  }

  get length(): number {
    return this.size;
  }

  /** Append; when full, the oldest item is evicted and returned. */
  push(item: T): T | undefined {
    let evicted: T | undefined;
    if (this.size === this.capacity) {
      evicted = this.shift();
    }
    this.items[(this.head + this.size) % this.capacity] = item;
    this.size++;
    return evicted;
  }

  shift(): T | undefined {
    if (this.size === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.capacity;
    this.size--;
    return item;
  }

  clear(): number {
    const n = this.size;
    this.items.fill(undefined);
    this.head = 0;
    this.size = 0;
    return n;
  }
}

/** retryAfterMs: what the receiver asked to wait (Retry-After), when it did. */
type AttemptResult = { ok: true } | { ok: false; retry: boolean; error: string; retryAfterMs?: number | null };

export class WebhookDelivery {
  readonly url: string;
  private cfg: HookConfig;
  private readonly target: HookTarget;
  private readonly client: HookClient;
  private readonly logger: Logger;
  private readonly queue: Ring<HookEvent>;
  private readonly maxAttempts: number;
  private readonly responseMaxBytes: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;
  private readonly random: () => number;
  private readonly userAgent: string;
  private readonly dropWarn: RateLimitedLog;
  private readonly failWarn: RateLimitedLog;

  private delivered = 0;
  private failed = 0;
  private dropped = 0;
  private lastError: string | null = null;

  private inFlight: HookEvent | null = null;
  private scheduled = false;
  private running = false;
  private closing: Promise<void> | null = null;
  /** Set when close() gives up: everything still pending is abandoned. */
  private readonly abandon = new AbortController();
  private cancelSleep: (() => void) | null = null;
  private idleWaiters: Array<() => void> = [];

  constructor(cfg: HookConfig, options: WebhookOptions) {
    this.cfg = cfg;
    this.target = parseHookUrl(cfg.url);
    this.url = this.target.display;
    this.logger = options.logger.child({ hook: this.url });
    this.queue = new Ring(Math.max(1, options.queueLength ?? DEFAULT_LIMITS.hookQueueLength));
    this.maxAttempts = Math.max(1, options.maxAttempts ?? DEFAULT_LIMITS.hookMaxAttempts);
    this.responseMaxBytes = Math.max(0, options.responseMaxBytes ?? DEFAULT_LIMITS.hookResponseMaxBytes);
    this.backoffBaseMs = options.backoffBaseMs ?? DEFAULT_BACKOFF_BASE_MS;
    this.backoffMaxMs = options.backoffMaxMs ?? DEFAULT_BACKOFF_MAX_MS;
    this.random = options.random ?? Math.random;
    this.userAgent = options.userAgent ?? DEFAULT_USER_AGENT;
    this.dropWarn = new RateLimitedLog(this.logger, options.warnIntervalMs ?? 10_000);
    this.failWarn = new RateLimitedLog(this.logger, options.warnIntervalMs ?? 10_000);
    this.client = new HookClient(this.target.origin, {
      connections: options.connections ?? 2,
      connectTimeoutMs: this.timeoutMs(),
      kind: 'webhook',
    });
  }

  /**
   * Accept an event for delivery. O(1), synchronous, never throws: the sender starts on a later
   * turn of the event loop, so the caller's work is never delayed by signing or I/O.
   */
  enqueue(event: HookEvent): void {
    if (this.closing) {
      // Shutting down: nothing new is accepted; count it so the loss is visible.
      this.dropped++;
      return;
    }
    const evicted = this.queue.push(event);
    if (evicted !== undefined) {
      this.dropped++;
      this.dropWarn.warn('dropWarn', { dropped: this.dropped, queueLength: this.queue.capacity, code: ErrorCodes.HOOK_QUEUE_FULL }, 'webhook queue full: oldest events dropped');
    }
    this.schedule();
  }

  /** Apply a reloaded config for the same URL (secret, timeout); the queue is kept. */
  reconfigure(cfg: HookConfig): void {
    if (cfg.url !== this.cfg.url) {
      throw new TypeError('WebhookDelivery.reconfigure: the url cannot change; create a new delivery');
    }
    this.cfg = cfg;
  }

  /** Current config (the dispatcher compares reloaded hooks against it). */
  get config(): HookConfig {
    return this.cfg;
  }

  stats(): WebhookStats {
    return {
      url: this.url,
      delivered: this.delivered,
      failed: this.failed,
      dropped: this.dropped,
      // Everything accepted and not yet settled, including the event being sent or retried.
      queued: this.queue.length + (this.inFlight ? 1 : 0),
      lastError: this.lastError,
    };
  }

  /** Resolves once nothing is queued or in flight. */
  idle(): Promise<void> {
    if (!this.running && !this.scheduled && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stop accepting events, keep delivering (retries included) until the queue is empty or the
   * deadline passes, then abandon the rest (counted as dropped) and close the connections.
   */
  close(deadlineMs = 5_000): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = (async () => {
      const started = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, Math.max(0, deadlineMs));
      });
      await Promise.race([this.idle(), deadline]);
      clearTimeout(timer);
      const lost = this.queue.clear() + (this.inFlight ? 1 : 0);
      if (lost > 0) {
        this.dropped += lost;
        this.logger.warn({ lost, deadlineMs }, 'webhook closed with undelivered events');
      }
      this.abandon.abort();
      this.cancelSleep?.();
      const left = Math.max(0, deadlineMs - (Date.now() - started));
      await this.client.close(left);
      // The sender loop notices the abort and exits; wait for it so nothing runs after close().
      await this.idle();
    })();
    return this.closing;
  }

  private timeoutMs(): number {
    return this.cfg.timeoutMs > 0 ? this.cfg.timeoutMs : DEFAULT_LIMITS.hookTimeoutMs;
  }

  private schedule(): void {
    if (this.scheduled || this.running) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.run();
    });
  }

  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (;;) {
        if (this.abandon.signal.aborted) break;
        const event = this.queue.shift();
        if (event === undefined) break;
        this.inFlight = event;
        try {
          await this.deliver(event);
        } catch (err) {
          // deliver() is written not to throw; if it does, it is a bug, but one event must not
          // stop the sender for good.
          this.failed++;
          this.lastError = `internal error: ${String(err)}`;
          this.logger.error({ err, event: event.id }, 'webhook sender failed');
        }
        this.inFlight = null;
      }
    } finally {
      this.inFlight = null;
      this.running = false;
      if (this.queue.length > 0 && !this.abandon.signal.aborted) this.schedule();
      else this.wakeIdle();
    }
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private async deliver(event: HookEvent): Promise<void> {
    // One delivery id per (hook, event), the same on every retry: receivers deduplicate on it.
    const deliveryId = randomUUID();
    for (let attempt = 1; ; attempt++) {
      const result = await this.attempt(event, deliveryId);
      if (this.abandon.signal.aborted) return; // counted as dropped by close()
      if (result.ok) {
        this.delivered++;
        if (attempt > 1) this.logger.debug({ event: event.id, attempt }, 'webhook delivered after retry');
        return;
      }
      this.lastError = result.error;
      if (!result.retry || attempt >= this.maxAttempts) {
        this.failed++;
        this.failWarn.warn('failWarn', { event: event.id, type: event.type, attempts: attempt, error: result.error, code: ErrorCodes.HOOK_DELIVERY },
          'webhook delivery failed',
        );
        return;
      }
      // A receiver's Retry-After is honoured up to backoffMaxMs, and never shortens the backoff.
      const asked = result.retryAfterMs ?? 0;
      const delay = Math.max(backoffDelayMs(attempt, this.backoffBaseMs, this.backoffMaxMs, this.random), Math.min(asked, this.backoffMaxMs));
      this.logger.debug({ event: event.id, attempt, delayMs: delay, error: result.error }, 'webhook attempt failed; retrying');
      await this.sleep(delay);
      if (this.abandon.signal.aborted) return;
    }
  }

  private async attempt(event: HookEvent, deliveryId: string): Promise<AttemptResult> {
    const headers = requestHeaders({
      deliveryId,
      body: event.body,
      secret: this.cfg.secret,
      userAgent: this.userAgent,
      authorization: this.target.authorization,
    });
    const timeoutMs = this.timeoutMs();
    const out: PostOutcome = await this.client.post(this.target.path, headers, event.body, timeoutMs, this.responseMaxBytes, this.abandon.signal);
    switch (out.kind) {
      case 'timeout':
        return { ok: false, retry: true, error: `timeout after ${timeoutMs} ms` };
      case 'error':
        return { ok: false, retry: true, error: out.message };
      case 'response': {
        const s = out.status;
        // The status alone decides: a receiver that said 2xx has the event, even if the rest of
        // its answer was cut (over the cap) or was slow to arrive.
        if (s >= 200 && s < 300) return { ok: true };
        const excerpt = bodyExcerpt(out.body);
        const error = `HTTP ${s}${excerpt ? `: ${excerpt}` : ''}`;
        // 5xx and 429 (too many requests): the receiver may recover, and may say when
        // (Retry-After); another 3xx/4xx: it will answer the same way next time.
        return { ok: false, retry: s >= 500 || s === 429, error, retryAfterMs: retryAfterMs(out.retryAfter) };
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.cancelSleep = () => {
        this.cancelSleep = null;
        done();
      };
    });
  }
}
