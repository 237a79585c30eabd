// The EventSink the engine emits through when webhooks are configured. It turns each event into
// one JSON body (serialized once) and hands it to every hook that asked for that event. emit()
// never blocks and never throws: the engine calls it from connection handlers.
import { randomUUID } from 'node:crypto';
import type { HookConfig } from '../config/types.js';
import type { Limits } from '../limits.js';
import type { Logger } from '../log.js';
import { EVENT_NAMES, type EventName, type EventPayloads, type EventSink } from './events.js';
import { WebhookDelivery, type WebhookOptions, type WebhookStats } from './webhook.js';

export interface HookDispatcherOptions extends Omit<WebhookOptions, 'logger' | 'queueLength' | 'maxAttempts' | 'responseMaxBytes'> {
  /** One `gray.auth_failed` per (gray id, remote address) per window; the rest are counted. */
  authFailedWindowMs?: number;
  /** Distinct (gray id, address) pairs remembered for that; the oldest are forgotten past it, so
   *  a scan from many addresses with made-up ids cannot grow memory without bound. */
  authFailedMaxKeys?: number;
  /** How long a hook removed by a reload may keep delivering what it had queued. */
  removedHookDeadlineMs?: number;
  now?: () => number;
}

/** The JSON body every webhook receives. */
export interface WebhookBody<E extends EventName = EventName> {
  id: string;
  type: E;
  time: string;
  data: EventPayloads[E] | (EventPayloads[E] & { suppressed: number });
}

interface Entry {
  key: string;
  delivery: WebhookDelivery;
  /** null = all events */
  events: ReadonlySet<string> | null;
}

const KNOWN_EVENTS: ReadonlySet<string> = new Set(EVENT_NAMES);

export class HookDispatcher implements EventSink {
  private entries: Entry[] = [];
  private routes = new Map<string, WebhookDelivery[]>();
  private readonly limits: Readonly<Limits>;
  private readonly logger: Logger;
  private readonly options: HookDispatcherOptions;
  private readonly now: () => number;
  private readonly authFailedWindowMs: number;
  private readonly authFailedMaxKeys: number;
  /** (grayId, address) → when the last event went out and how many were held back since. */
  private readonly authFailed = new Map<string, { sentAt: number; suppressed: number }>();
  /** Removed hooks still draining; close() waits for them too. */
  private readonly retiring = new Set<Promise<void>>();
  private closed = false;

  constructor(hooks: readonly HookConfig[], limits: Readonly<Limits>, logger: Logger, options: HookDispatcherOptions = {}) {
    this.limits = limits;
    this.logger = logger;
    this.options = options;
    this.now = options.now ?? Date.now;
    this.authFailedWindowMs = options.authFailedWindowMs ?? 10_000;
    this.authFailedMaxKeys = Math.max(1, options.authFailedMaxKeys ?? 10_000);
    this.update(hooks);
  }

  /** A hook subscribes to name and the dispatcher is open. */
  wants(name: EventName): boolean {
    return !this.closed && (this.routes.get(name)?.length ?? 0) > 0;
  }

  emit<E extends EventName>(name: E, payload: EventPayloads[E]): void {
    try {
      const targets = this.routes.get(name);
      if (!targets || targets.length === 0 || this.closed) return;
      let data: object = payload;
      if (name === 'gray.auth_failed') {
        const p = payload as EventPayloads['gray.auth_failed'];
        const suppressed = this.admitAuthFailed(p.grayId, p.remoteAddress);
        if (suppressed === null) return;
        data = { ...p, suppressed };
      }
      const id = randomUUID();
      const body = JSON.stringify({ id, type: name, time: new Date(this.now()).toISOString(), data });
      const event = { id, type: name, body };
      for (const d of targets) d.enqueue(event);
    } catch (err) {
      // A payload that cannot be serialized is a bug in the emitter; losing one event is better
      // than throwing into a connection handler.
      this.logger.error({ err, event: name }, 'could not dispatch event to webhooks');
    }
  }

  /**
   * Apply a reloaded hook list. A hook is identified by its URL (and its rank among hooks with
   * the same URL); one that is still there keeps its queue and counters and takes the new
   * secret, timeout and event list. Removed hooks finish what they hold within a short deadline.
   */
  update(hooks: readonly HookConfig[]): void {
    if (this.closed) return;
    const old = new Map(this.entries.map((e) => [e.key, e]));
    const seen = new Map<string, number>();
    const next: Entry[] = [];
    for (const cfg of hooks) {
      const n = seen.get(cfg.url) ?? 0;
      seen.set(cfg.url, n + 1);
      const key = `${cfg.url}#${n}`;
      const events = this.eventFilter(cfg);
      const existing = old.get(key);
      if (existing) {
        old.delete(key);
        existing.delivery.reconfigure(cfg);
        next.push({ key, delivery: existing.delivery, events });
        continue;
      }
      try {
        const delivery = new WebhookDelivery(cfg, {
          ...this.options,
          logger: this.logger,
          queueLength: this.limits.hookQueueLength,
          maxAttempts: this.limits.hookMaxAttempts,
          responseMaxBytes: this.limits.hookResponseMaxBytes,
        });
        next.push({ key, delivery, events });
      } catch (err) {
        // The config loader validates URLs; if one slips through, skip that hook, keep the rest.
        this.logger.error({ err, url: safeUrl(cfg.url) }, 'webhook not started: invalid url');
      }
    }
    for (const gone of old.values()) this.retire(gone.delivery);
    this.entries = next;
    this.routes = new Map();
    for (const name of EVENT_NAMES) {
      this.routes.set(
        name,
        next.filter((e) => e.events === null || e.events.has(name)).map((e) => e.delivery),
      );
    }
  }

  stats(): WebhookStats[] {
    return this.entries.map((e) => e.delivery.stats());
  }

  /** Resolves when every hook has nothing queued or in flight (tests, graceful shutdown). */
  async idle(): Promise<void> {
    await Promise.all(this.entries.map((e) => e.delivery.idle()));
  }

  /** Stop accepting events and drain every hook within the deadline. */
  async close(deadlineMs = 5_000): Promise<void> {
    this.closed = true;
    const entries = this.entries;
    this.entries = [];
    this.routes = new Map();
    await Promise.all([...entries.map((e) => e.delivery.close(deadlineMs)), ...this.retiring]);
  }

  private eventFilter(cfg: HookConfig): ReadonlySet<string> | null {
    if (cfg.events.length === 0) return null;
    const unknown = cfg.events.filter((e) => !KNOWN_EVENTS.has(e));
    if (unknown.length > 0) {
      this.logger.warn({ url: safeUrl(cfg.url), unknown }, 'webhook subscribes to unknown events; they never fire');
    }
    return new Set(cfg.events);
  }

  private retire(delivery: WebhookDelivery): void {
    const p = delivery
      .close(this.options.removedHookDeadlineMs ?? 2_000)
      .catch((err: unknown) => this.logger.error({ err, url: delivery.url }, 'closing removed webhook failed'))
      .finally(() => this.retiring.delete(p));
    this.retiring.add(p);
  }

  /**
   * Rate limit for `gray.auth_failed`: returns the number of failures held back since the last
   * event for this pair (to report now), or null to hold this one back. A brute-force attempt
   * should show up in a receiver as one line every window with a count, not a flood.
   */
  private admitAuthFailed(grayId: string, remoteAddress: string): number | null {
    const key = `${grayId}\u0000${remoteAddress}`;
    const t = this.now();
    const entry = this.authFailed.get(key);
    if (entry && t - entry.sentAt < this.authFailedWindowMs) {
      entry.suppressed++;
      return null;
    }
    const suppressed = entry?.suppressed ?? 0;
    // Delete then set: Map keeps insertion order, so the first key is the least recently sent.
    this.authFailed.delete(key);
    while (this.authFailed.size >= this.authFailedMaxKeys) {
      const oldest = this.authFailed.keys().next();
      if (oldest.done) break;
      this.authFailed.delete(oldest.value);
    }
    this.authFailed.set(key, { sentAt: t, suppressed: 0 });
    return suppressed;
  }
}

function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.href;
  } catch {
    return '<unparseable url>';
  }
}
