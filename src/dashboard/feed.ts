// The dashboard's model of the white, and the streams that follow it.
//
// Built from the two sources the rest of relay already has: WhiteSnapshot (what /v1/state and
// /metrics render) and the EventSink the engine and the reloader emit into. The feed keeps rows
// built from the last snapshot, each stamped with the sequence number at which it last changed,
// plus the last events and a short traffic history. A stream remembers the sequence number it has
// sent up to; what it is sent next is everything stamped after that. So a slow stream (a socket
// that did not drain) simply gets a bigger delta later, never a queue, and every browser gets at
// most one message per second however busy the white is.
import { randomBytes } from 'node:crypto';
import type { GraySnapshot, WhiteSnapshot } from '../engine/stats.js';
import type { EventName, EventPayloads, EventSink } from '../hooks/events.js';
import type { Delta, EventKind, EventRow, FullState, GrayRow, Totals, TrafficSample } from './wire.js';

export interface FeedLimits {
  /** Events kept and shown. */
  readonly events: number;
  /** Least time between two messages to one stream. */
  readonly minUpdateIntervalMs: number;
  /** Least time between two snapshots, however many events or pages ask for one. */
  readonly refreshMinMs: number;
  readonly sampleIntervalMs: number;
  /** Samples in a sparkline. */
  readonly samplePoints: number;
  /** A stream whose socket has not drained for this long is closed. */
  readonly stalledStreamMs: number;
  /** A comment line goes to an idle stream this often, so proxies keep it open. */
  readonly keepAliveMs: number;
}

export const FEED_LIMITS: FeedLimits = {
  events: 100,
  minUpdateIntervalMs: 1000,
  refreshMinMs: 200,
  sampleIntervalMs: 5000,
  samplePoints: 60,
  stalledStreamMs: 30_000,
  keepAliveMs: 15_000,
};

/** Longest text of one event line; longer ones (a reload of hundreds of grays) are cut. */
const EVENT_TEXT_MAX = 300;
/** Gray ids in events come from the network too (a failed login names any id it likes). */
const EVENT_ID_MAX = 100;

export interface FeedSource {
  snapshot(): WhiteSnapshot;
  readonly version: string;
}

/** Where a stream's messages go: the HTTP response, in the server. */
export interface FeedStream {
  /** Writes text; false when the socket's buffer is full (then drained() is called later). */
  write(text: string): boolean;
  close(): void;
}

export interface FeedSubscription {
  /** The socket took what was buffered: send what is due. */
  drained(): void;
  /** The stream is gone. */
  close(): void;
}

interface Stamped<T> {
  readonly value: T;
  readonly v: number;
}

interface Subscriber {
  readonly stream: FeedStream;
  sentSeq: number;
  lastSentAt: number;
  lastWriteAt: number;
  blockedSince: number | null;
  timer: NodeJS.Timeout | null;
  closed: boolean;
}

export class DashboardFeed implements EventSink {
  /** Random per process, part of every stream position. */
  readonly epoch = randomBytes(6).toString('base64url');
  private seq = 0;
  private readonly rows = new Map<string, Stamped<GrayRow>>();
  private idsV = 0;
  private totals: Totals = emptyTotals();
  private readonly events: Array<Stamped<EventRow>> = [];
  private eventCount = 0;
  private readonly offlineSince = new Map<string, number>();
  private readonly series = new Map<string, number[]>();
  private readonly lastBytes = new Map<string, number>();
  private readonly samples: Array<Stamped<TrafficSample>> = [];
  private sampleCount = 0;
  private startedAt = 0;
  private started = false;
  private lastRefreshAt = 0;
  private refreshTimer: NodeJS.Timeout | null = null;
  private sampler: NodeJS.Timeout | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private readonly subscribers = new Set<Subscriber>();
  /** The text of the last delta built, by the position it starts from: streams usually share it. */
  private deltaCache: { since: number; seq: number; text: string } | null = null;

  constructor(
    private readonly source: FeedSource,
    readonly limits: FeedLimits = FEED_LIMITS,
  ) {}

  /** After the white has started: the first snapshot and the traffic sampler. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.refresh();
    this.sampler = setInterval(() => this.sample(), this.limits.sampleIntervalMs).unref();
  }

  stop(): void {
    if (this.sampler) clearInterval(this.sampler);
    if (this.ticker) clearInterval(this.ticker);
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.sampler = this.ticker = this.refreshTimer = null;
    for (const sub of [...this.subscribers]) this.drop(sub, true);
  }

  get streams(): number {
    return this.subscribers.size;
  }

  /** EventSink: the client events (one per client) are not shown. */
  wants(name: EventName): boolean {
    return name !== 'client.connected' && name !== 'client.disconnected';
  }

  /** EventSink: the events a person watching wants; the rest (one per client) are not shown. */
  emit<E extends EventName>(name: E, payload: EventPayloads[E]): void {
    try {
      this.record(name, payload);
    } catch {
      // An event the dashboard cannot show must not disturb whoever emitted it.
    }
  }

  /** `GET /api/state`: the model as of now (a snapshot at most refreshMinMs old). */
  full(): FullState {
    if (this.started && Date.now() - this.lastRefreshAt >= this.limits.refreshMinMs) this.refresh();
    return this.fullState();
  }

  /** A new stream. `since` is the position the page has (`epoch.seq`, from /api/state or the
   *  browser's Last-Event-ID); without a usable one it is sent the whole state first. */
  subscribe(stream: FeedStream, since: string | null): FeedSubscription {
    const now = Date.now();
    const sub: Subscriber = { stream, sentSeq: -1, lastSentAt: 0, lastWriteAt: now, blockedSince: null, timer: null, closed: false };
    const position = this.parsePosition(since);
    this.subscribers.add(sub);
    this.ensureTicker();
    if (position === null) {
      if (this.started && now - this.lastRefreshAt >= this.limits.refreshMinMs) this.refresh();
      sub.sentSeq = this.seq;
      sub.lastSentAt = now;
      this.write(sub, message('state', this.position(this.seq), JSON.stringify(this.fullState())));
    } else {
      sub.sentSeq = position;
      this.pump(sub);
    }
    return {
      drained: () => {
        sub.blockedSince = null;
        this.pump(sub);
      },
      close: () => this.drop(sub, false),
    };
  }

  private position(seq: number): string {
    return `${this.epoch}.${seq}`;
  }

  private parsePosition(text: string | null): number | null {
    if (text === null) return null;
    const dot = text.lastIndexOf('.');
    if (dot < 0 || text.slice(0, dot) !== this.epoch) return null;
    const digits = text.slice(dot + 1);
    if (!/^[0-9]{1,15}$/.test(digits)) return null;
    const seq = Number(digits);
    return seq <= this.seq ? seq : null;
  }

  private record<E extends EventName>(name: E, payload: EventPayloads[E]): void {
    const at = Date.now();
    let kind: EventKind;
    let grayId: string | null = null;
    let text: string;
    switch (name) {
      case 'gray.connected': {
        const p = payload as EventPayloads['gray.connected'];
        [kind, grayId, text] = [name, p.grayId, `from ${p.remoteAddress}`];
        break;
      }
      case 'gray.disconnected': {
        const p = payload as EventPayloads['gray.disconnected'];
        [kind, grayId, text] = [name, p.grayId, p.reason];
        this.offlineSince.set(p.grayId, at);
        break;
      }
      case 'gray.auth_failed': {
        const p = payload as EventPayloads['gray.auth_failed'];
        [kind, grayId, text] = [name, p.grayId, `from ${p.remoteAddress}`];
        break;
      }
      case 'config.reloaded': {
        const p = payload as EventPayloads['config.reloaded'];
        for (const id of p.added) this.offlineSince.set(id, at);
        const parts = (
          [
            ['added', p.added],
            ['removed', p.removed],
            ['changed', p.changed],
          ] as const
        )
          .filter(([, ids]) => ids.length > 0)
          .map(([what, ids]) => `${what} ${ids.join(', ')}`);
        [kind, text] = [name, parts.length === 0 ? 'no gray changed' : parts.join('; ')];
        break;
      }
      case 'config.rejected': {
        const p = payload as EventPayloads['config.rejected'];
        [kind, text] = [name, p.error];
        break;
      }
      default:
        return;
    }
    const row: EventRow = { n: ++this.eventCount, at, kind, grayId: grayId === null ? null : cut(grayId, EVENT_ID_MAX), text: cut(text, EVENT_TEXT_MAX) };
    this.events.push({ value: row, v: ++this.seq });
    if (this.events.length > this.limits.events) this.events.splice(0, this.events.length - this.limits.events);
    this.scheduleRefresh();
  }

  /** Soon, not at once: a burst of events (grays logging in after a restart) makes one snapshot. */
  private scheduleRefresh(): void {
    if (this.refreshTimer !== null || !this.started) return;
    const wait = Math.max(0, this.lastRefreshAt + this.limits.refreshMinMs - Date.now());
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      this.refresh();
      this.pumpAll();
    }, wait);
  }

  private refresh(): void {
    const snap = this.source.snapshot();
    const now = Date.now();
    const first = this.lastRefreshAt === 0;
    this.startedAt = snap.startedAt;
    this.lastRefreshAt = now;
    const next = this.seq + 1;
    let changed = false;
    let membership = false;
    const seen = new Set<string>();
    for (const g of snap.grays) {
      seen.add(g.id);
      let offlineSince = this.offlineSince.get(g.id);
      if (offlineSince === undefined) {
        offlineSince = first ? snap.startedAt : now;
        this.offlineSince.set(g.id, offlineSince);
      }
      const row = toRow(g, offlineSince);
      const old = this.rows.get(g.id);
      if (old === undefined) membership = true;
      if (old === undefined || !sameRow(old.value, row)) {
        this.rows.set(g.id, { value: row, v: next });
        changed = true;
      }
    }
    for (const id of [...this.rows.keys()]) {
      if (seen.has(id)) continue;
      this.rows.delete(id);
      this.offlineSince.delete(id);
      this.series.delete(id);
      this.lastBytes.delete(id);
      membership = true;
    }
    if (membership) this.idsV = next;
    const totals = totalsOf(this.rows.values(), snap);
    if (membership || changed || !sameTotals(totals, this.totals)) {
      this.totals = totals;
      this.seq = next;
    }
  }

  private sample(): void {
    this.refresh();
    const points = this.limits.samplePoints;
    const values: Record<string, number> = {};
    const anyLine = this.series.size > 0;
    for (const [id, { value: row }] of this.rows) {
      const total = row.bytesIn + row.bytesOut;
      const before = this.lastBytes.get(id);
      this.lastBytes.set(id, total);
      // A gray's counters start at 0 with its listeners, which the feed saw come (at start or in
      // a reload); counters that went down (a gray moved to new ports) restart from there.
      const moved = Math.max(0, total - (before ?? 0));
      let series = this.series.get(id);
      if (series === undefined) {
        if (moved === 0) continue;
        series = new Array<number>(points).fill(0);
        this.series.set(id, series);
      }
      series.push(moved);
      series.splice(0, series.length - points);
      if (moved > 0) values[id] = moved;
      else if (series.every((n) => n === 0)) this.series.delete(id);
    }
    this.sampleCount += 1;
    // Nothing moved and every line is flat: there is nothing to tell (a page counts a gap in
    // `k` as quiet samples), and no message goes out every sampleIntervalMs for nothing.
    if (Object.keys(values).length === 0 && !anyLine) return;
    const sample: TrafficSample = { k: this.sampleCount, at: Date.now(), values };
    this.samples.push({ value: sample, v: ++this.seq });
    if (this.samples.length > points) this.samples.splice(0, this.samples.length - points);
    this.pumpAll();
  }

  private fullState(): FullState {
    const series: Record<string, number[]> = {};
    for (const [id, s] of this.series) series[id] = [...s];
    return {
      epoch: this.epoch,
      seq: this.seq,
      now: Date.now(),
      startedAt: this.startedAt,
      version: this.source.version,
      totals: this.totals,
      grays: [...this.rows.values()].map((r) => r.value),
      events: this.events.map((e) => e.value),
      traffic: { intervalMs: this.limits.sampleIntervalMs, points: this.limits.samplePoints, lastK: this.sampleCount, series },
    };
  }

  private deltaText(since: number): string {
    const cached = this.deltaCache;
    if (cached !== null && cached.since === since && cached.seq === this.seq) return cached.text;
    const delta: Delta = {
      seq: this.seq,
      now: Date.now(),
      totals: this.totals,
      grays: [...this.rows.values()].filter((r) => r.v > since).map((r) => r.value),
      ...(this.idsV > since ? { ids: [...this.rows.keys()] } : {}),
      events: this.events.filter((e) => e.v > since).map((e) => e.value),
      samples: this.samples.filter((s) => s.v > since).map((s) => s.value),
    };
    const text = message('delta', this.position(this.seq), JSON.stringify(delta));
    this.deltaCache = { since, seq: this.seq, text };
    return text;
  }

  private pumpAll(): void {
    for (const sub of this.subscribers) this.pump(sub);
  }

  private pump(sub: Subscriber): void {
    if (sub.closed || sub.blockedSince !== null || sub.sentSeq >= this.seq) return;
    const now = Date.now();
    const wait = sub.lastSentAt + this.limits.minUpdateIntervalMs - now;
    if (wait > 0) {
      sub.timer ??= setTimeout(() => {
        sub.timer = null;
        this.pump(sub);
      }, wait);
      return;
    }
    const text = this.deltaText(sub.sentSeq);
    sub.sentSeq = this.seq;
    sub.lastSentAt = now;
    this.write(sub, text);
  }

  private write(sub: Subscriber, text: string): void {
    sub.lastWriteAt = Date.now();
    if (!sub.stream.write(text)) sub.blockedSince ??= sub.lastWriteAt;
  }

  /** Once a second while anyone watches: byte counters move without events. */
  private ensureTicker(): void {
    if (this.ticker !== null) return;
    this.ticker = setInterval(() => this.tick(), this.limits.minUpdateIntervalMs);
  }

  private tick(): void {
    if (this.subscribers.size === 0) {
      if (this.ticker) clearInterval(this.ticker);
      this.ticker = null;
      return;
    }
    const now = Date.now();
    if (this.started && now - this.lastRefreshAt >= this.limits.refreshMinMs) this.refresh();
    for (const sub of [...this.subscribers]) {
      if (sub.blockedSince !== null && now - sub.blockedSince >= this.limits.stalledStreamMs) {
        this.drop(sub, true);
        continue;
      }
      this.pump(sub);
      if (!sub.closed && sub.blockedSince === null && now - sub.lastWriteAt >= this.limits.keepAliveMs) this.write(sub, ': keep-alive\n\n');
    }
  }

  private drop(sub: Subscriber, closeStream: boolean): void {
    if (sub.closed) return;
    sub.closed = true;
    if (sub.timer) clearTimeout(sub.timer);
    this.subscribers.delete(sub);
    if (closeStream) sub.stream.close();
  }
}

/** One server-sent event. JSON.stringify never puts a line break in its output. */
function message(event: string, id: string, data: string): string {
  return `id: ${id}\nevent: ${event}\ndata: ${data}\n\n`;
}

function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** Field by field from the snapshot: nothing else of it can reach the page. */
function toRow(g: GraySnapshot, offlineSince: number): GrayRow {
  const online = g.connected && g.connectedSince !== null;
  return {
    id: g.id,
    online,
    since: online ? g.connectedSince! : offlineSince,
    remote: online ? g.remoteAddress : null,
    publicPort: g.publicPort,
    dataPort: g.dataPort,
    poolIdle: g.poolIdle,
    poolTarget: g.poolTarget,
    activeClients: g.activeClients,
    pendingClients: g.pendingClients,
    clientsTotal: g.clientsTotal,
    bytesIn: g.bytesFromClients,
    bytesOut: g.bytesToClients,
    lastError: g.lastError,
  };
}

function sameRow(a: GrayRow, b: GrayRow): boolean {
  for (const key of Object.keys(a) as Array<keyof GrayRow>) if (a[key] !== b[key]) return false;
  return true;
}

function emptyTotals(): Totals {
  return { grays: 0, online: 0, activeClients: 0, poolIdle: 0, poolTarget: 0, bytesIn: 0, bytesOut: 0, authFailures: 0, reloadsOk: 0, reloadsRejected: 0 };
}

function totalsOf(rows: Iterable<Stamped<GrayRow>>, snap: WhiteSnapshot): Totals {
  const t = { ...emptyTotals(), authFailures: snap.counters.authFailures, reloadsOk: snap.counters.reloads.ok, reloadsRejected: snap.counters.reloads.rejected };
  for (const { value: r } of rows) {
    t.grays += 1;
    if (r.online) t.online += 1;
    t.activeClients += r.activeClients;
    t.poolIdle += r.poolIdle;
    t.poolTarget += r.poolTarget;
    t.bytesIn += r.bytesIn;
    t.bytesOut += r.bytesOut;
  }
  return t;
}

function sameTotals(a: Totals, b: Totals): boolean {
  for (const key of Object.keys(a) as Array<keyof Totals>) if (a[key] !== b[key]) return false;
  return true;
}
