// Webhook delivery and the dispatcher, against a real HTTP receiver on loopback. Tests wait for
// what the receiver sees (promises it resolves), never for fixed sleeps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Webhook } from 'standardwebhooks';
import type { HookConfig } from '../../src/config/types.js';
import { DEFAULT_LIMITS, resolveLimits } from '../../src/limits.js';
import { silentLogger } from '../../src/log.js';
import { HookDispatcher } from '../../src/hooks/dispatcher.js';
import { WebhookDelivery, backoffDelayMs, type HookEvent } from '../../src/hooks/webhook.js';
import { retryAfterMs } from '../../src/hooks/transport.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Arrival {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
  at: number;
  req: IncomingMessage;
  res: ServerResponse;
}

/** A webhook receiver: records every request, answers through a replaceable handler. */
class Receiver {
  readonly arrivals: Arrival[] = [];
  handler: (a: Arrival) => void = (a) => a.res.end('ok');
  private waiters: Array<{ n: number; resolve: () => void }> = [];
  private constructor(
    readonly server: Server,
    readonly url: string,
  ) {}

  static async start(path = '/hook'): Promise<Receiver> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const r = new Receiver(server, `http://127.0.0.1:${port}${path}`);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const a: Arrival = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: performance.now(), req, res };
        r.arrivals.push(a);
        r.handler(a);
        r.waiters = r.waiters.filter((w) => {
          if (r.arrivals.length >= w.n) w.resolve();
          return r.arrivals.length < w.n;
        });
      });
    });
    return r;
  }

  /** Resolves once `n` requests have arrived in total. */
  waitFor(n: number): Promise<Arrival[]> {
    if (this.arrivals.length >= n) return Promise.resolve(this.arrivals);
    return new Promise((resolve) => this.waiters.push({ n, resolve: () => resolve(this.arrivals) }));
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function hook(url: string, over: Partial<HookConfig> = {}): HookConfig {
  return { url, events: [], secret: null, timeoutMs: 2_000, ...over };
}

function ev(id: string, type = 'gray.connected'): HookEvent {
  return { id, type, body: JSON.stringify({ id, type, time: new Date().toISOString(), data: {} }) };
}

const bodyId = (a: Arrival): string => (JSON.parse(a.body) as { id: string }).id;

/** What a receiver does: the Standard Webhooks library, given the secret as whsec_<base64>. */
function verifyLikeAReceiver(a: Arrival, secret: Buffer): boolean {
  try {
    new Webhook(`whsec_${secret.toString('base64')}`).verify(a.body, a.headers as Record<string, string>);
    return true;
  } catch {
    return false;
  }
}

const fast = { backoffBaseMs: 5, backoffMaxMs: 50, random: () => 0.5 };

test('every event body has the documented shape and a signature a receiver can verify', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  const secret = Buffer.from('0123456789abcdef0123456789abcdef');
  const d = new HookDispatcher([hook(rx.url, { secret })], DEFAULT_LIMITS, silentLogger(), fast);
  t.after(() => d.close(100));

  const sent = [
    ['gray.connected', { grayId: 'alpha', remoteAddress: '10.0.0.7:5000', sessionId: 's1' }],
    ['client.connected', { grayId: 'alpha', connectionId: 'c1', clientAddress: '198.51.100.4:40000' }],
    ['client.disconnected', { grayId: 'alpha', connectionId: 'c1', clientAddress: '198.51.100.4:40000', bytesFromClient: 10, bytesToClient: 20, durationMs: 5, reason: 'closed' }],
    ['gray.disconnected', { grayId: 'alpha', remoteAddress: '10.0.0.7:5000', sessionId: 's1', reason: 'heartbeat' }],
    ['config.reloaded', { path: '/etc/relay.yaml', added: ['b'], removed: [], changed: ['alpha'] }],
    ['config.rejected', { path: '/etc/relay.yaml', error: 'grays[0].id: must match pattern' }],
    ['gray.auth_failed', { grayId: 'alpha', remoteAddress: '203.0.113.9:1234' }],
  ] as const;
  const before = Math.floor(Date.now() / 1000);
  for (const [name, payload] of sent) d.emit(name, payload as never);
  const arrivals = await rx.waitFor(sent.length);
  const after = Math.ceil(Date.now() / 1000);

  const ids = new Set<string>();
  arrivals.forEach((a, i) => {
    const [name, payload] = sent[i]!;
    assert.equal(a.method, 'POST');
    assert.equal(a.path, '/hook');
    assert.equal(a.headers['content-type'], 'application/json');
    assert.match(String(a.headers['user-agent']), /^relay\/\d+\.\d+\.\d+/);
    assert.match(String(a.headers['webhook-id']), UUID);
    const ts = Number(a.headers['webhook-timestamp']);
    assert.ok(Number.isInteger(ts) && ts >= before && ts <= after, `timestamp ${ts} within [${before}, ${after}]`);
    assert.ok(verifyLikeAReceiver(a, secret), `signature of ${name} verifies`);
    assert.ok(!verifyLikeAReceiver(a, Buffer.from('another secret, another mac....')), 'a wrong secret does not verify');
    const body = JSON.parse(a.body) as { id: string; type: string; time: string; data: unknown };
    assert.deepEqual(Object.keys(body), ['id', 'type', 'time', 'data']);
    assert.match(body.id, UUID);
    assert.equal(body.type, name, 'events arrive in emit order');
    assert.equal(new Date(body.time).toISOString(), body.time);
    const expected = name === 'gray.auth_failed' ? { ...payload, suppressed: 0 } : payload;
    assert.deepEqual(body.data, expected);
    ids.add(body.id);
  });
  assert.equal(ids.size, sent.length, 'every event has its own id');
  await d.idle();
  assert.deepEqual(d.stats(), [{ url: rx.url, delivered: sent.length, failed: 0, dropped: 0, queued: 0, lastError: null }]);
});

test('a tampered body or a changed timestamp no longer verifies', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  const secret = Buffer.from('s3cr3t-s3cr3t-s3cr3t-s3cr3t-0000');
  const d = new HookDispatcher([hook(rx.url, { secret })], DEFAULT_LIMITS, silentLogger(), fast);
  t.after(() => d.close(100));
  d.emit('gray.connected', { grayId: 'a', remoteAddress: '1.2.3.4:5', sessionId: 'x' });
  const [a] = await rx.waitFor(1);
  assert.ok(a && verifyLikeAReceiver(a, secret));
  assert.ok(!verifyLikeAReceiver({ ...a, body: a.body.replace('"a"', '"b"') }, secret));
  assert.ok(!verifyLikeAReceiver({ ...a, headers: { ...a.headers, 'webhook-timestamp': String(Number(a.headers['webhook-timestamp']) + 1) } }, secret));
});

test('without a secret there is no signature header', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  const d = new HookDispatcher([hook(rx.url)], DEFAULT_LIMITS, silentLogger(), fast);
  t.after(() => d.close(100));
  d.emit('gray.connected', { grayId: 'a', remoteAddress: '1.2.3.4:5', sessionId: 'x' });
  const [a] = await rx.waitFor(1);
  assert.equal(a?.headers['webhook-signature'], undefined);
  assert.match(String(a?.headers['webhook-id']), UUID);
  assert.match(String(a?.headers['webhook-timestamp']), /^\d+$/);
});

test('the event filter: a hook gets only the events it lists; an empty list gets all', async (t) => {
  const only = await Receiver.start();
  const all = await Receiver.start();
  t.after(() => Promise.all([only.stop(), all.stop()]));
  const d = new HookDispatcher(
    [hook(only.url, { events: ['gray.connected', 'config.rejected'] }), hook(all.url)],
    DEFAULT_LIMITS,
    silentLogger(),
    fast,
  );
  t.after(() => d.close(100));
  d.emit('client.connected', { grayId: 'a', service: 'default', connectionId: 'c', clientAddress: '1.1.1.1:1' });
  d.emit('gray.connected', { grayId: 'a', remoteAddress: '1.2.3.4:5', sessionId: 'x' });
  d.emit('gray.disconnected', { grayId: 'a', remoteAddress: '1.2.3.4:5', sessionId: 'x', reason: 'bye' });
  d.emit('config.rejected', { path: '/p', error: 'e' });
  await Promise.all([all.waitFor(4), only.waitFor(2)]);
  await d.idle();
  assert.deepEqual(only.arrivals.map((a) => (JSON.parse(a.body) as { type: string }).type), ['gray.connected', 'config.rejected']);
  assert.deepEqual(all.arrivals.map((a) => (JSON.parse(a.body) as { type: string }).type), ['client.connected', 'gray.connected', 'gray.disconnected', 'config.rejected']);
});

test('5xx is retried with growing delays, the same delivery id, then delivered', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  let n = 0;
  rx.handler = (a) => {
    n++;
    a.res.statusCode = n <= 3 ? 500 : 200;
    a.res.end(n <= 3 ? 'try later' : 'ok');
  };
  // Delays of 100, 200, 400 ms: each step is large next to scheduling noise on a busy machine.
  const base = 200;
  const noJitter = (): number => 0;
  const w = new WebhookDelivery(hook(rx.url, { secret: Buffer.from('k'.repeat(32)) }), {
    logger: silentLogger(),
    maxAttempts: 5,
    backoffBaseMs: base,
    backoffMaxMs: 10_000,
    random: noJitter,
  });
  t.after(() => w.close(100));
  w.enqueue(ev('e1'));
  const arrivals = await rx.waitFor(4);
  await w.idle();

  const gaps = arrivals.slice(1).map((a, i) => a.at - arrivals[i]!.at);
  const planned = [1, 2, 3].map((k) => backoffDelayMs(k, base, 10_000, noJitter));
  assert.deepEqual(planned, [100, 200, 400]);
  gaps.forEach((g, i) => {
    // A timer never fires early (allow 1 ms for clock granularity).
    assert.ok(g >= planned[i]! - 1, `gap ${i} = ${g.toFixed(1)} ms >= ${planned[i]} ms`);
    if (i > 0) assert.ok(g > gaps[i - 1]!, `gap ${i} (${g.toFixed(1)}) > gap ${i - 1} (${gaps[i - 1]!.toFixed(1)})`);
  });
  assert.equal(arrivals.length, 4, 'three failures and one success');
  const ids = new Set(arrivals.map((a) => a.headers['webhook-id']));
  assert.equal(ids.size, 1, 'retries keep the delivery id');
  assert.ok(arrivals.every((a) => bodyId(a) === 'e1'));
  const s = w.stats();
  assert.equal(s.delivered, 1);
  assert.equal(s.failed, 0);
  assert.equal(s.queued, 0);
  assert.match(s.lastError ?? '', /^HTTP 500: try later$/);
});

test('5xx every time: gives up after hookMaxAttempts and keeps lastError', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  rx.handler = (a) => {
    a.res.statusCode = 503;
    a.res.end('down');
  };
  const w = new WebhookDelivery(hook(rx.url), { logger: silentLogger(), maxAttempts: 3, ...fast });
  t.after(() => w.close(100));
  w.enqueue(ev('e1'));
  w.enqueue(ev('e2'));
  await rx.waitFor(6);
  await w.idle();
  assert.deepEqual(rx.arrivals.map(bodyId), ['e1', 'e1', 'e1', 'e2', 'e2', 'e2']);
  assert.deepEqual(w.stats(), { url: rx.url, delivered: 0, failed: 2, dropped: 0, queued: 0, lastError: 'HTTP 503: down' });
});

test('4xx is not retried', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  rx.handler = (a) => {
    a.res.statusCode = bodyId(a) === 'e1' ? 400 : 204;
    a.res.end();
  };
  const w = new WebhookDelivery(hook(rx.url), { logger: silentLogger(), maxAttempts: 5, ...fast });
  t.after(() => w.close(100));
  w.enqueue(ev('e1'));
  w.enqueue(ev('e2'));
  await rx.waitFor(2);
  await w.idle();
  // Delivery is ordered: e2 arriving second means e1 was settled after a single attempt.
  assert.deepEqual(rx.arrivals.map(bodyId), ['e1', 'e2']);
  const s = w.stats();
  assert.equal(s.failed, 1);
  assert.equal(s.delivered, 1);
  assert.equal(s.lastError, 'HTTP 400');
});

test('429 is retried like a 5xx, after the Retry-After it asks for, bounded by backoffMaxMs', { timeout: 15_000 }, async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  // First a 429 asking for 1 s, then one asking for an hour (capped), then 204.
  const answers: Array<[number, string | null]> = [[429, '1'], [429, '3600'], [204, null]];
  rx.handler = (a) => {
    const [status, retryAfter] = answers[rx.arrivals.length - 1]!;
    a.res.statusCode = status;
    if (retryAfter) a.res.setHeader('retry-after', retryAfter);
    a.res.end();
  };
  const w = new WebhookDelivery(hook(rx.url), { logger: silentLogger(), maxAttempts: 5, backoffBaseMs: 10, backoffMaxMs: 1_500, random: () => 0 });
  t.after(() => w.close(100));
  w.enqueue(ev('e1'));
  const arrivals = await rx.waitFor(3);
  await w.idle();
  const gaps = arrivals.slice(1).map((a, i) => a.at - arrivals[i]!.at);
  assert.ok(gaps[0]! >= 999, `waited ${gaps[0]!.toFixed(0)} ms for Retry-After: 1`);
  assert.ok(gaps[1]! >= 1_499 && gaps[1]! < 3_000, `waited ${gaps[1]!.toFixed(0)} ms: Retry-After 3600 capped at backoffMaxMs 1500`);
  assert.deepEqual(w.stats(), { url: rx.url, delivered: 1, failed: 0, dropped: 0, queued: 0, lastError: 'HTTP 429' });
});

test('retryAfterMs reads delay-seconds and HTTP dates, and ignores what it cannot read', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(retryAfterMs('120', now), 120_000);
  assert.equal(retryAfterMs('Thu, 01 Jan 2026 00:00:30 GMT', now), 30_000);
  assert.equal(retryAfterMs('Wed, 31 Dec 2025 23:00:00 GMT', now), 0, 'a date in the past: no wait');
  assert.equal(retryAfterMs('soon', now), null);
  assert.equal(retryAfterMs(null, now), null);
});

test('a 3xx is not followed and counts as a failure', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  rx.handler = (a) => {
    if (a.path === '/hook') {
      a.res.writeHead(307, { location: '/elsewhere' });
      a.res.end();
    } else a.res.end('should not be reached');
  };
  const w = new WebhookDelivery(hook(rx.url), { logger: silentLogger(), maxAttempts: 5, ...fast });
  t.after(() => w.close(100));
  w.enqueue(ev('e1'));
  await rx.waitFor(1);
  await w.idle();
  assert.deepEqual(rx.arrivals.map((a) => a.path), ['/hook']);
  assert.equal(w.stats().failed, 1);
  assert.equal(w.stats().lastError, 'HTTP 307');
});

test('a receiver that never answers: enqueue returns at once, the queue holds the events, close() ends within its deadline', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  rx.handler = () => {}; // hold every request open
  const w = new WebhookDelivery(hook(rx.url, { timeoutMs: 60_000 }), { logger: silentLogger(), queueLength: 1000, ...fast });
  for (let i = 0; i < 1000; i++) {
    const r: unknown = w.enqueue(ev(`e${i}`));
    assert.equal(r, undefined, 'enqueue returns nothing to wait for');
  }
  // Still in the same synchronous run: nothing could have been sent, everything is queued.
  assert.equal(w.stats().queued, 1000);
  assert.equal(w.stats().dropped, 0);
  const [first] = await rx.waitFor(1);
  assert.equal(first && bodyId(first), 'e0');
  assert.equal(w.stats().queued, 1000, '999 waiting + 1 in flight');
  await w.close(50);
  const s = w.stats();
  assert.equal(s.delivered, 0);
  assert.equal(s.dropped, 1000, 'what close() abandons is counted as dropped');
  assert.equal(s.queued, 0);
  w.enqueue(ev('late'));
  assert.equal(w.stats().dropped, 1001, 'events after close are refused and counted');
});

test('a timeout is retried, then counted as failed', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  rx.handler = () => {};
  const w = new WebhookDelivery(hook(rx.url, { timeoutMs: 60 }), { logger: silentLogger(), maxAttempts: 2, ...fast });
  t.after(() => w.close(100));
  w.enqueue(ev('e1'));
  // Wait on the sender, not the receiver: on a loaded machine an attempt may time out before its
  // request reaches the server at all.
  await w.idle();
  assert.equal(w.stats().failed, 1);
  assert.equal(w.stats().delivered, 0);
  assert.equal(w.stats().lastError, 'timeout after 60 ms');
  assert.ok(rx.arrivals.length <= 2);
});

test('a full queue drops the oldest waiting events and counts them', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  const w = new WebhookDelivery(hook(rx.url), { logger: silentLogger(), queueLength: 3, ...fast });
  t.after(() => w.close(100));
  for (const id of ['e1', 'e2', 'e3', 'e4', 'e5']) w.enqueue(ev(id));
  assert.equal(w.stats().dropped, 2);
  assert.equal(w.stats().queued, 3);
  await rx.waitFor(3);
  await w.idle();
  assert.deepEqual(rx.arrivals.map(bodyId), ['e3', 'e4', 'e5']);
  assert.deepEqual(w.stats(), { url: rx.url, delivered: 3, failed: 0, dropped: 2, queued: 0, lastError: null });
});

test('the event in flight is never dropped; the oldest waiting ones are', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  const held: Arrival[] = [];
  rx.handler = (a) => {
    if (bodyId(a) === 'e1') held.push(a);
    else a.res.end();
  };
  const w = new WebhookDelivery(hook(rx.url), { logger: silentLogger(), queueLength: 3, ...fast });
  t.after(() => w.close(100));
  w.enqueue(ev('e1'));
  await rx.waitFor(1); // e1 is in flight and held by the receiver
  for (const id of ['e2', 'e3', 'e4', 'e5', 'e6']) w.enqueue(ev(id));
  assert.equal(w.stats().dropped, 2);
  assert.equal(w.stats().queued, 4, '3 waiting + 1 in flight');
  held[0]!.res.end();
  await rx.waitFor(4);
  await w.idle();
  assert.deepEqual(rx.arrivals.map(bodyId), ['e1', 'e4', 'e5', 'e6']);
  assert.equal(w.stats().delivered, 4);
});

test('a response body over the cap is cut: the connection is dropped and the next event still goes out', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  const chunk = Buffer.alloc(16 * 1024, 0x61);
  let streamed = 0;
  const cut = new Promise<boolean>((resolve) => {
    rx.handler = (a) => {
      if (bodyId(a) !== 'big') {
        a.res.end('small');
        return;
      }
      a.res.writeHead(200, { 'content-type': 'text/plain' });
      // An endless body: only the client hanging up ends it.
      const pump = (): void => {
        while (!a.res.destroyed) {
          streamed += chunk.length;
          if (!a.res.write(chunk)) {
            a.res.once('drain', pump);
            return;
          }
        }
      };
      a.res.on('close', () => resolve(!a.res.writableFinished));
      pump();
    };
  });
  const w = new WebhookDelivery(hook(rx.url), { logger: silentLogger(), responseMaxBytes: 1024, ...fast });
  t.after(() => w.close(100));
  w.enqueue(ev('big'));
  w.enqueue(ev('after'));
  assert.equal(await cut, true, 'the response was cut before it finished');
  await rx.waitFor(2);
  await w.idle();
  assert.deepEqual(rx.arrivals.map(bodyId), ['big', 'after']);
  assert.equal(w.stats().delivered, 2, 'a 2xx is a delivery even when its body is cut');
  assert.ok(streamed < 64 * 1024 * 1024, 'the client stopped reading long before an unbounded amount');
});

test('a 2xx whose body never finishes is still a delivery (the status decides)', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  rx.handler = (a) => {
    if (bodyId(a) === 'slow') {
      a.res.writeHead(200, { 'content-type': 'text/plain' });
      a.res.write('partial…'); // and never end
    } else a.res.end();
  };
  const w = new WebhookDelivery(hook(rx.url, { timeoutMs: 300 }), { logger: silentLogger(), maxAttempts: 3, ...fast });
  t.after(() => w.close(100));
  w.enqueue(ev('slow'));
  w.enqueue(ev('next'));
  await w.idle();
  // Had the slow body counted as a timeout, 'slow' would have been retried until it failed.
  assert.deepEqual(w.stats(), { url: rx.url, delivered: 2, failed: 0, dropped: 0, queued: 0, lastError: null });
});

test('credentials in the hook url become a Basic header and never appear in stats', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  const url = rx.url.replace('http://', 'http://user:pa%20ss@');
  const w = new WebhookDelivery(hook(url), { logger: silentLogger(), ...fast });
  t.after(() => w.close(100));
  w.enqueue(ev('e1'));
  const [a] = await rx.waitFor(1);
  assert.equal(a?.headers.authorization, `Basic ${Buffer.from('user:pa ss').toString('base64')}`);
  assert.equal(w.stats().url, rx.url);
});

test('gray.auth_failed is limited per (gray, address) with a suppressed count in the next one', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  let now = 1_000_000;
  const d = new HookDispatcher([hook(rx.url)], DEFAULT_LIMITS, silentLogger(), { ...fast, now: () => now, authFailedWindowMs: 10_000 });
  t.after(() => d.close(100));
  const fail = (grayId: string, remoteAddress: string): void => d.emit('gray.auth_failed', { grayId, remoteAddress });
  for (let i = 0; i < 5; i++) fail('g1', 'ip1'); // one sent, four held back
  now += 5_000;
  fail('g1', 'ip1');
  fail('g1', 'ip1'); // held back: six in all
  fail('g1', 'ip2'); // another pair: its own window
  fail('g2', 'ip1');
  now += 5_000;
  fail('g1', 'ip1'); // window over: sent, carrying the six
  fail('g1', 'ip1'); // held back again
  const arrivals = await rx.waitFor(4);
  await d.idle();
  const data = arrivals.map((a) => (JSON.parse(a.body) as { data: unknown }).data);
  assert.deepEqual(data, [
    { grayId: 'g1', remoteAddress: 'ip1', suppressed: 0 },
    { grayId: 'g1', remoteAddress: 'ip2', suppressed: 0 },
    { grayId: 'g2', remoteAddress: 'ip1', suppressed: 0 },
    { grayId: 'g1', remoteAddress: 'ip1', suppressed: 6 },
  ]);
  assert.equal(rx.arrivals.length, 4);
});

test('the auth_failed limiter forgets the oldest pairs past its bound', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  const d = new HookDispatcher([hook(rx.url)], DEFAULT_LIMITS, silentLogger(), { ...fast, now: () => 0, authFailedMaxKeys: 2 });
  t.after(() => d.close(100));
  d.emit('gray.auth_failed', { grayId: 'a', remoteAddress: 'x' });
  d.emit('gray.auth_failed', { grayId: 'b', remoteAddress: 'x' });
  d.emit('gray.auth_failed', { grayId: 'c', remoteAddress: 'x' }); // evicts a
  d.emit('gray.auth_failed', { grayId: 'a', remoteAddress: 'x' }); // a is new again: sent
  d.emit('gray.auth_failed', { grayId: 'c', remoteAddress: 'x' }); // still remembered: held back
  await rx.waitFor(4);
  await d.idle();
  assert.deepEqual(rx.arrivals.map((a) => (JSON.parse(a.body) as { data: { grayId: string } }).data.grayId), ['a', 'b', 'c', 'a']);
});

test('update() keeps the queue and counters of a hook that stays, starts new ones, retires removed ones', async (t) => {
  const keep = await Receiver.start();
  const added = await Receiver.start();
  const removed = await Receiver.start();
  t.after(() => Promise.all([keep.stop(), added.stop(), removed.stop()]));
  const held: Arrival[] = [];
  keep.handler = (a) => {
    if (held.length === 0) held.push(a);
    else a.res.end();
  };
  const d = new HookDispatcher([hook(keep.url), hook(removed.url)], DEFAULT_LIMITS, silentLogger(), fast);
  t.after(() => d.close(100));
  const conn = (sessionId: string): void => d.emit('gray.connected', { grayId: 'a', remoteAddress: 'r', sessionId });
  conn('s1');
  conn('s2');
  conn('s3');
  await keep.waitFor(1); // s1 held in flight, s2 and s3 waiting
  await removed.waitFor(3);
  assert.equal(d.stats()[0]?.queued, 3);

  d.update([hook(keep.url, { events: ['gray.connected'], secret: Buffer.from('n'.repeat(32)) }), hook(added.url, { events: ['client.connected'] })]);
  assert.deepEqual(d.stats().map((s) => [s.url, s.queued]), [
    [keep.url, 3],
    [added.url, 0],
  ]);
  conn('s4');
  d.emit('client.connected', { grayId: 'a', service: 'default', connectionId: 'c', clientAddress: 'x' });
  held[0]!.res.end();
  await keep.waitFor(4);
  await added.waitFor(1);
  await d.idle();
  const sessions = keep.arrivals.map((a) => (JSON.parse(a.body) as { data: { sessionId: string } }).data.sessionId);
  assert.deepEqual(sessions, ['s1', 's2', 's3', 's4']);
  assert.equal(keep.arrivals[3]?.headers['webhook-signature']?.slice(0, 3), 'v1,', 'the new secret applies to later attempts');
  assert.equal(removed.arrivals.length, 3, 'the removed hook got nothing after update()');
  assert.equal(d.stats()[0]?.delivered, 4);
});

test('emit never throws, even for a payload that cannot be serialized', async (t) => {
  const rx = await Receiver.start();
  t.after(() => rx.stop());
  const d = new HookDispatcher([hook(rx.url)], resolveLimits({}), silentLogger(), fast);
  t.after(() => d.close(100));
  assert.doesNotThrow(() => d.emit('config.rejected', { path: '/p', error: 1n as unknown as string }));
  d.emit('config.rejected', { path: '/p', error: 'fine' });
  const [a] = await rx.waitFor(1);
  assert.equal((JSON.parse(a!.body) as { data: { error: string } }).data.error, 'fine');
});

test('backoff delays: exponential step with equal jitter, capped', () => {
  const lo = () => 0;
  const hi = () => 0.999999;
  for (let k = 1; k < 8; k++) {
    // The shortest next delay is at least the longest current one: delays always grow until the cap.
    assert.ok(backoffDelayMs(k + 1, 100, 1e9, lo) >= backoffDelayMs(k, 100, 1e9, hi));
  }
  assert.equal(backoffDelayMs(20, 100, 1_000, hi), 1_000);
  assert.equal(backoffDelayMs(20, 100, 1_000, lo), 500);
});

test('wants: an event is wanted only while a hook subscribes to it, so the engine builds no payload for the rest', async () => {
  const none = new HookDispatcher([], DEFAULT_LIMITS, silentLogger(), fast);
  assert.equal(none.wants('client.connected'), false);
  const d = new HookDispatcher([hook('http://127.0.0.1:9/', { events: ['client.disconnected'] })], DEFAULT_LIMITS, silentLogger(), fast);
  assert.equal(d.wants('client.disconnected'), true);
  assert.equal(d.wants('client.connected'), false);
  d.update([hook('http://127.0.0.1:9/')]);
  assert.equal(d.wants('client.connected'), true, 'an empty list subscribes to every event');
  await d.close(100);
  assert.equal(d.wants('client.connected'), false, 'a closed dispatcher takes nothing');
  await none.close(100);
});
