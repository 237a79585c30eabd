// The dashboard feed on its own: rows from a snapshot, events, deltas by position, the update
// rate per stream, backpressure and stalled streams, the event and traffic limits.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { GraySnapshot, WhiteSnapshot } from '../../src/engine/stats.js';
import { newGrayStats } from '../../src/engine/stats.js';
import { DashboardFeed, FEED_LIMITS, type FeedLimits, type FeedStream } from '../../src/dashboard/feed.js';
import type { Delta, FullState } from '../../src/dashboard/wire.js';

function gray(id: string, extra: Partial<GraySnapshot> = {}): GraySnapshot {
  return { ...newGrayStats(), id, publicPort: 20000, dataPort: 20001, connected: false, ...extra };
}

class FakeWhite {
  snap: WhiteSnapshot = {
    configPath: null,
    startedAt: Date.now() - 60_000,
    grays: [gray('a'), gray('b')],
    counters: { authFailures: 0, dataRejections: {}, controlRejections: {}, reloads: { ok: 0, rejected: 0 }, lastReload: null },
    hooks: [],
  };
  readonly version = 'test';
  snapshot(): WhiteSnapshot {
    return structuredClone(this.snap);
  }
  set(id: string, extra: Partial<GraySnapshot>): void {
    this.snap.grays = this.snap.grays.map((g) => (g.id === id ? { ...g, ...extra } : g));
  }
}

interface Message {
  readonly event: string;
  readonly id: string;
  readonly data: unknown;
  readonly at: number;
}

/** A stream that parses what it is sent; `accept` decides what write() answers. */
class FakeStream implements FeedStream {
  readonly messages: Message[] = [];
  comments = 0;
  accept = true;
  closed = false;
  private waiters: Array<() => void> = [];
  write(text: string): boolean {
    if (text.startsWith(':')) this.comments++;
    else {
      const fields = Object.fromEntries(
        text
          .trim()
          .split('\n')
          .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]),
      ) as Record<string, string>;
      this.messages.push({ event: fields.event!, id: fields.id!, data: JSON.parse(fields.data!), at: Date.now() });
    }
    for (const w of this.waiters.splice(0)) w();
    return this.accept;
  }
  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w();
  }
  /** Resolves when `cond` holds after a write or close; fails after timeoutMs. */
  until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      const check = (): void => {
        if (cond()) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(check);
      };
      this.waiters.push(check);
    });
  }
}

function feedWith(white: FakeWhite, limits: Partial<FeedLimits> = {}): DashboardFeed {
  const feed = new DashboardFeed(white, { ...FEED_LIMITS, ...limits });
  feed.start();
  return feed;
}

const connected = (id: string): { grayId: string; remoteAddress: string; sessionId: string } => ({ grayId: id, remoteAddress: '127.0.0.1', sessionId: 's' });

test('the state has a row per gray, offline since the start, and totals', (t) => {
  const white = new FakeWhite();
  white.set('b', { connected: true, connectedSince: Date.now() - 1000, remoteAddress: '10.0.0.2', poolIdle: 3, poolTarget: 4, bytesFromClients: 10, bytesToClients: 20 });
  const feed = feedWith(white);
  t.after(() => feed.stop());
  const s = feed.full();
  assert.deepEqual(
    s.grays.map((g) => [g.id, g.online, g.since === white.snap.startedAt, g.remote]),
    [
      ['a', false, true, null],
      ['b', true, false, '10.0.0.2'],
    ],
  );
  assert.equal(s.totals.grays, 2);
  assert.equal(s.totals.online, 1);
  assert.equal(s.totals.bytesIn, 10);
  assert.equal(s.totals.bytesOut, 20);
  assert.equal(s.totals.poolIdle, 3);
});

test('a stream without a position gets the whole state, then deltas with only what changed', async (t) => {
  const white = new FakeWhite();
  const feed = feedWith(white, { minUpdateIntervalMs: 50, refreshMinMs: 10 });
  t.after(() => feed.stop());
  const stream = new FakeStream();
  const sub = feed.subscribe(stream, null);
  t.after(() => sub.close());
  assert.equal(stream.messages[0]?.event, 'state');
  white.set('a', { connected: true, connectedSince: Date.now(), remoteAddress: '127.0.0.1' });
  feed.emit('gray.connected', connected('a'));
  await stream.until(() => stream.messages.length >= 2, 'a delta');
  const delta = stream.messages[1]!;
  assert.equal(delta.event, 'delta');
  const d = delta.data as Delta;
  assert.deepEqual(
    d.grays.map((g) => [g.id, g.online]),
    [['a', true]],
    'only the row that changed',
  );
  assert.deepEqual(
    d.events.map((e) => [e.kind, e.grayId, e.text]),
    [['gray.connected', 'a', 'from 127.0.0.1']],
  );
  assert.equal(d.ids, undefined, 'no gray came or went');
  assert.equal(delta.id, `${feed.epoch}.${d.seq}`);
});

test('a stream from a known position gets no state; one from another white or the future does', async (t) => {
  const white = new FakeWhite();
  const feed = feedWith(white, { minUpdateIntervalMs: 50, refreshMinMs: 10 });
  t.after(() => feed.stop());
  const s = feed.full();
  const known = new FakeStream();
  const sub = feed.subscribe(known, `${s.epoch}.${s.seq}`);
  t.after(() => sub.close());
  assert.equal(known.messages.length, 0, 'nothing new since that position');
  for (const position of [`other.${s.seq}`, `${s.epoch}.${s.seq + 5}`, `${s.epoch}.x`, 'junk']) {
    const other = new FakeStream();
    feed.subscribe(other, position).close();
    assert.equal(other.messages[0]?.event, 'state', position);
  }
  feed.emit('gray.auth_failed', { grayId: 'intruder', remoteAddress: '10.9.9.9' });
  await known.until(() => known.messages.length === 1, 'the delta');
  assert.equal(known.messages[0]!.event, 'delta');
  assert.deepEqual(
    (known.messages[0]!.data as Delta).events.map((e) => e.kind),
    ['gray.auth_failed'],
  );
});

test('a burst of events reaches a stream as at most one message per interval, none lost', async (t) => {
  const interval = 200;
  const white = new FakeWhite();
  const feed = feedWith(white, { minUpdateIntervalMs: interval, refreshMinMs: 10 });
  t.after(() => feed.stop());
  const stream = new FakeStream();
  const sub = feed.subscribe(stream, null);
  t.after(() => sub.close());
  // Bursts of events a little apart: each burst is at most one message, and messages are at
  // least `interval` apart however the bursts fall.
  const bursts = 6;
  const perBurst = 10;
  const total = bursts * perBurst;
  for (let b = 0; b < bursts; b++) {
    for (let i = 0; i < perBurst; i++) feed.emit('gray.connected', connected(`g${b}-${i}`));
    await new Promise((r) => setTimeout(r, 50));
  }
  await stream.until(() => stream.messages.flatMap((m) => (m.event === 'delta' ? (m.data as Delta).events : [])).length === total, 'every event');
  const deltas = stream.messages.filter((m) => m.event === 'delta');
  assert.ok(deltas.length <= bursts, `${deltas.length} messages for ${total} events in ${bursts} bursts`);
  const times = stream.messages.map((m) => m.at);
  for (let i = 1; i < times.length; i++) assert.ok(times[i]! - times[i - 1]! >= interval - 5, `gap ${times[i]! - times[i - 1]!} ms`);
  const ns = deltas.flatMap((m) => (m.data as Delta).events.map((e) => e.n));
  assert.deepEqual(
    ns,
    ns.map((_, i) => i + 1),
    'each event once, in order',
  );
});

test('a stream whose socket is full gets nothing until it drains, then one message with all of it', async (t) => {
  const white = new FakeWhite();
  const feed = feedWith(white, { minUpdateIntervalMs: 20, refreshMinMs: 5 });
  t.after(() => feed.stop());
  const stream = new FakeStream();
  stream.accept = false;
  const sub = feed.subscribe(stream, null);
  t.after(() => sub.close());
  // A second stream that drains witnesses when the events went out.
  const witness = new FakeStream();
  const other = feed.subscribe(witness, null);
  t.after(() => other.close());
  for (let i = 0; i < 5; i++) feed.emit('gray.connected', connected(`g${i}`));
  await witness.until(() => witness.messages.some((m) => m.event === 'delta' && (m.data as Delta).events.length === 5), 'the delta to the witness');
  assert.equal(stream.messages.length, 1, 'only the state written before the socket filled');
  stream.accept = true;
  sub.drained();
  await stream.until(() => stream.messages.length === 2, 'the delta after drain');
  assert.equal((stream.messages[1]!.data as Delta).events.length, 5);
});

test('a stream that does not drain for stalledStreamMs is closed', async (t) => {
  const feed = feedWith(new FakeWhite(), { minUpdateIntervalMs: 20, stalledStreamMs: 150 });
  t.after(() => feed.stop());
  const stream = new FakeStream();
  stream.accept = false;
  const started = Date.now();
  feed.subscribe(stream, null);
  assert.equal(feed.streams, 1);
  await stream.until(() => stream.closed, 'the close');
  assert.ok(Date.now() - started >= 150);
  assert.equal(feed.streams, 0);
});

test('idle streams get a keep-alive comment', async (t) => {
  const feed = feedWith(new FakeWhite(), { minUpdateIntervalMs: 20, keepAliveMs: 60 });
  t.after(() => feed.stop());
  const stream = new FakeStream();
  const sub = feed.subscribe(stream, null);
  t.after(() => sub.close());
  await stream.until(() => stream.comments >= 2, 'two keep-alives');
});

test('events past the limit push out the oldest; long texts and ids are cut', (t) => {
  const feed = feedWith(new FakeWhite());
  t.after(() => feed.stop());
  for (let i = 1; i <= 150; i++) feed.emit('gray.connected', connected(`g${i}`));
  feed.emit('gray.auth_failed', { grayId: 'x'.repeat(5000), remoteAddress: '10.0.0.1' });
  feed.emit('config.rejected', { path: '/etc/relay.yaml', error: 'e'.repeat(5000) });
  feed.emit('client.connected', { grayId: 'a', service: 'default', connectionId: 'c', clientAddress: '1.2.3.4' });
  const s = feed.full();
  assert.equal(s.events.length, FEED_LIMITS.events);
  assert.equal(s.events[0]!.n, 53, 'the oldest were dropped');
  const last = s.events.at(-1)!;
  assert.equal(last.kind, 'config.rejected', 'client events are not shown');
  assert.equal(last.text.length, 300);
  assert.equal(s.events.at(-2)!.grayId!.length, 100);
});

test('reloads: added grays appear in a delta with the new id list, removed ones leave it', async (t) => {
  const white = new FakeWhite();
  const feed = feedWith(white, { minUpdateIntervalMs: 20, refreshMinMs: 5 });
  t.after(() => feed.stop());
  const stream = new FakeStream();
  const sub = feed.subscribe(stream, null);
  t.after(() => sub.close());
  white.snap.grays = [white.snap.grays[0]!, gray('c')];
  feed.emit('config.reloaded', { path: '/w.yaml', added: ['c'], removed: ['b'], changed: [] });
  await stream.until(() => stream.messages.length === 2, 'the delta');
  const d = stream.messages[1]!.data as Delta;
  assert.deepEqual(d.ids, ['a', 'c']);
  assert.deepEqual(
    d.grays.map((g) => g.id),
    ['c'],
  );
  assert.equal(d.events[0]!.text, 'added c; removed b');
  assert.ok(d.grays[0]!.since >= d.events[0]!.at - 1000, 'offline since the reload that added it');
});

test('traffic: each sample records the bytes each gray moved; the history is samplePoints long', async (t) => {
  const white = new FakeWhite();
  const feed = feedWith(white, { sampleIntervalMs: 30, samplePoints: 4, minUpdateIntervalMs: 10 });
  t.after(() => feed.stop());
  const stream = new FakeStream();
  const sub = feed.subscribe(stream, null);
  t.after(() => sub.close());
  const samples = (): Delta['samples'] => stream.messages.flatMap((m) => (m.event === 'delta' ? (m.data as Delta).samples : []));
  white.set('a', { bytesFromClients: 1000, bytesToClients: 500 });
  await stream.until(() => samples().some((s) => s.values.a === 1500), 'a sample with the bytes');
  assert.ok(
    samples().every((s) => s.values.b === undefined),
    'grays that moved nothing are left out',
  );
  assert.deepEqual(feed.full().traffic.series.a?.slice(-1), [1500], 'the history shows it');
  const k = samples().find((s) => s.values.a === 1500)!.k;
  await stream.until(() => samples().some((s) => s.k === k + 4), 'four quiet samples');
  assert.deepEqual(
    samples().map((s) => s.k).slice(-5),
    [k, k + 1, k + 2, k + 3, k + 4],
    'the quiet samples that shift the spike out are sent',
  );
  const full: FullState = feed.full();
  assert.ok(full.traffic.lastK >= k + 4);
  assert.equal(full.traffic.points, 4);
  assert.equal(full.traffic.series.a, undefined, 'after 4 quiet samples the series is dropped');
});
