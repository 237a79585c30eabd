// The authorize hook against a real HTTP endpoint on loopback: every kind of answer, and every way
// of not answering, must end in a decision.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Webhook } from 'standardwebhooks';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AuthorizeHookConfig } from '../../src/config/types.js';
import { silentLogger } from '../../src/log.js';
import { Authorizer, REASON_MAX_CHARS } from '../../src/hooks/authorize.js';

interface Call {
  headers: IncomingMessage['headers'];
  body: string;
  remotePort: number;
  res: ServerResponse;
}

/** An authorize endpoint whose answer each test sets. */
async function endpoint(answer: (c: Call) => void): Promise<{ url: string; calls: Call[]; server: Server; stop: () => Promise<void> }> {
  const calls: Call[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const c: Call = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), remotePort: req.socket.remotePort ?? -1, res };
      calls.push(c);
      answer(c);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/authorize`,
    calls,
    server,
    stop: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function json(c: Call, status: number, value: unknown): void {
  c.res.writeHead(status, { 'content-type': 'application/json' });
  c.res.end(typeof value === 'string' ? value : JSON.stringify(value));
}

function cfg(url: string, over: Partial<AuthorizeHookConfig> = {}): AuthorizeHookConfig {
  return { url, secret: null, timeoutMs: 2_000, onTimeout: 'deny', grayLogin: true, clientConnect: true, ...over };
}

const req = { kind: 'client_connect', grayId: 'alpha', remoteAddress: '198.51.100.4:40000', connectionId: 'c-1' } as const;

test('enabled() follows the config and costs nothing without one', async () => {
  const off = new Authorizer(null, silentLogger());
  assert.equal(off.enabled('gray_login'), false);
  assert.equal(off.enabled('client_connect'), false);
  assert.deepEqual(await off.decide(req), { allow: true, reason: 'no authorize hook configured', source: 'disabled' });

  const onlyLogin = new Authorizer(cfg('http://127.0.0.1:9/x', { clientConnect: false }), silentLogger());
  assert.equal(onlyLogin.enabled('gray_login'), true);
  assert.equal(onlyLogin.enabled('client_connect'), false);
  await onlyLogin.close();
});

test('allow: the request is signed and carries the documented fields', async (t) => {
  const ep = await endpoint((c) => json(c, 200, { allow: true, reason: 'known customer' }));
  t.after(ep.stop);
  const secret = Buffer.from('authorize-secret-authorize-secret');
  const a = new Authorizer(cfg(ep.url, { secret }), silentLogger());
  t.after(() => a.close());
  const d = await a.decide(req);
  assert.deepEqual(d, { allow: true, reason: 'known customer', source: 'hook' });

  const [c] = ep.calls;
  assert.ok(c);
  const body = JSON.parse(c.body) as Record<string, unknown>;
  assert.deepEqual(Object.keys(body).sort(), ['connection_id', 'gray_id', 'id', 'kind', 'remote_address', 'time']);
  assert.equal(body.kind, 'client_connect');
  assert.equal(body.gray_id, 'alpha');
  assert.equal(body.remote_address, '198.51.100.4:40000');
  assert.equal(body.connection_id, 'c-1');
  assert.equal(c.headers['webhook-id'], body.id);
  assert.equal(c.headers['content-type'], 'application/json');
  // As a receiver checks it: the Standard Webhooks library (throws when it does not verify).
  new Webhook(`whsec_${secret.toString('base64')}`).verify(c.body, c.headers as Record<string, string>);
  assert.throws(() => new Webhook(`whsec_${secret.toString('base64')}`).verify(c.body.replace('alpha', 'alphb'), c.headers as Record<string, string>), /signature/i);
});

test('deny, with and without a reason; gray_login carries session_id', async (t) => {
  let answer: unknown = { allow: false, reason: 'blocked country' };
  const ep = await endpoint((c) => json(c, 200, answer));
  t.after(ep.stop);
  const a = new Authorizer(cfg(ep.url), silentLogger());
  t.after(() => a.close());
  assert.deepEqual(await a.decide(req), { allow: false, reason: 'blocked country', source: 'hook' });
  answer = { allow: false };
  const d = await a.decide({ kind: 'gray_login', grayId: 'beta', remoteAddress: '10.0.0.7:5000', sessionId: 's-9' });
  assert.deepEqual(d, { allow: false, reason: 'denied by authorize hook', source: 'hook' });
  const body = JSON.parse(ep.calls[1]!.body) as Record<string, unknown>;
  assert.equal(body.kind, 'gray_login');
  assert.equal(body.session_id, 's-9');
  assert.equal('connection_id' in body, false);
});

test('a long or multi-line reason is cut to one bounded line', async (t) => {
  const ep = await endpoint((c) => json(c, 200, { allow: false, reason: `line1\nline2 ${'x'.repeat(1000)}` }));
  t.after(ep.stop);
  const a = new Authorizer(cfg(ep.url), silentLogger());
  t.after(() => a.close());
  const d = await a.decide(req);
  assert.equal(d.allow, false);
  assert.ok(!d.reason.includes('\n'));
  assert.ok(d.reason.startsWith('line1 line2 '));
  assert.ok(d.reason.length <= REASON_MAX_CHARS + 1);
});

for (const onTimeout of ['allow', 'deny'] as const) {
  test(`timeout follows on_timeout: ${onTimeout}`, async (t) => {
    const ep = await endpoint(() => {}); // never answers
    t.after(ep.stop);
    const a = new Authorizer(cfg(ep.url, { timeoutMs: 80, onTimeout }), silentLogger());
    t.after(() => a.close());
    const d = await a.decide(req);
    assert.equal(d.allow, onTimeout === 'allow');
    assert.equal(d.source, 'timeout');
    assert.match(d.reason, new RegExp(`within 80 ms \\(on_timeout: ${onTimeout}\\)`));
  });
}

test('an answer whose body stalls after the status line is a timeout', async (t) => {
  const ep = await endpoint((c) => {
    c.res.writeHead(200, { 'content-type': 'application/json' });
    c.res.write('{"allow": tr'); // and never finish
  });
  t.after(ep.stop);
  const a = new Authorizer(cfg(ep.url, { timeoutMs: 150, onTimeout: 'allow' }), silentLogger());
  t.after(() => a.close());
  const d = await a.decide(req);
  assert.equal(d.allow, true);
  assert.equal(d.source, 'timeout');
  assert.match(d.reason, /did not finish its answer within 150 ms/);
});

const garbage: Array<[string, (c: Call) => void, RegExp]> = [
  ['not JSON', (c) => json(c, 200, 'yes please'), /not JSON/],
  ['a JSON array', (c) => json(c, 200, [true]), /not a JSON object/],
  ['allow as a string', (c) => json(c, 200, { allow: 'true' }), /no boolean "allow"/],
  ['allow missing', (c) => json(c, 200, { reason: 'ok' }), /no boolean "allow"/],
  ['HTTP 500 with allow:true', (c) => json(c, 500, { allow: true }), /HTTP 500/],
  ['HTTP 403', (c) => json(c, 403, 'forbidden'), /HTTP 403: forbidden/],
  ['a redirect', (c) => { c.res.writeHead(302, { location: 'http://127.0.0.1:1/allow-all' }); c.res.end(); }, /HTTP 302/],
  ['an answer over the size cap', (c) => json(c, 200, { allow: true, pad: 'x'.repeat(4096) }), /larger than 1024 bytes/],
  ['a connection closed without an answer', (c) => c.res.socket?.destroy(), /unreachable/],
  [
    'a body cut short by the server',
    (c) => {
      c.res.writeHead(200, { 'content-type': 'application/json' });
      c.res.write('{"allow": tr', () => c.res.socket?.destroy());
    },
    /cut short/,
  ],
];

for (const [name, answer, reason] of garbage) {
  test(`garbage answer denies: ${name}`, async (t) => {
    const ep = await endpoint(answer);
    t.after(ep.stop);
    const a = new Authorizer(cfg(ep.url, { onTimeout: 'allow' }), silentLogger(), { responseMaxBytes: 1024 });
    t.after(() => a.close());
    const d = await a.decide(req);
    assert.equal(d.allow, false);
    assert.equal(d.source, 'error');
    assert.match(d.reason, reason);
  });
}

test('an unreachable hook denies (connection refused), even with on_timeout: allow', async () => {
  const ep = await endpoint(() => {});
  const url = ep.url;
  await ep.stop(); // nothing listens on that port any more
  const a = new Authorizer(cfg(url, { onTimeout: 'allow' }), silentLogger());
  const d = await a.decide(req);
  await a.close();
  assert.equal(d.allow, false);
  assert.equal(d.source, 'error');
  assert.match(d.reason, /unreachable/);
});

test('decisions reuse keep-alive connections', async (t) => {
  const ep = await endpoint((c) => json(c, 200, { allow: true }));
  t.after(ep.stop);
  const a = new Authorizer(cfg(ep.url), silentLogger());
  t.after(() => a.close());
  for (let i = 0; i < 20; i++) assert.equal((await a.decide(req)).allow, true);
  // undici may open a second connection when the next request is dispatched in the same tick the
  // previous answer completes; what matters is that connections are reused, not opened per decision.
  const sockets = new Set(ep.calls.map((c) => c.remotePort)).size;
  assert.ok(sockets <= 2, `20 sequential decisions used ${sockets} connections`);
});

test('concurrent decisions all get an answer', async (t) => {
  const ep = await endpoint((c) => {
    const body = JSON.parse(c.body) as { connection_id: string };
    json(c, 200, { allow: Number(body.connection_id) % 2 === 0, reason: body.connection_id });
  });
  t.after(ep.stop);
  // A generous timeout: this test is about every caller getting its own answer, not about speed.
  const a = new Authorizer(cfg(ep.url, { timeoutMs: 30_000 }), silentLogger(), { connections: 4 });
  t.after(() => a.close());
  const ds = await Promise.all(Array.from({ length: 40 }, (_, i) => a.decide({ ...req, connectionId: String(i) })));
  ds.forEach((d, i) => assert.deepEqual(d, { allow: i % 2 === 0, reason: String(i), source: 'hook' }));
});

test('an invalid url or a closed authorizer denies (fail closed)', async (t) => {
  const bad = new Authorizer(cfg('ftp://example.invalid/x', { onTimeout: 'allow' }), silentLogger());
  assert.equal(bad.enabled('client_connect'), true, 'still gated: the engine must ask and be refused');
  assert.equal((await bad.decide(req)).allow, false);

  const ep = await endpoint((c) => json(c, 200, { allow: true }));
  t.after(ep.stop);
  const a = new Authorizer(cfg(ep.url), silentLogger());
  assert.equal((await a.decide(req)).allow, true);
  await a.close();
  assert.equal((await a.decide(req)).allow, false);
});

test('update() switches to a new endpoint and can turn the hook off', async (t) => {
  const one = await endpoint((c) => json(c, 200, { allow: true, reason: 'one' }));
  const two = await endpoint((c) => json(c, 200, { allow: false, reason: 'two' }));
  t.after(() => Promise.all([one.stop(), two.stop()]));
  const a = new Authorizer(cfg(one.url), silentLogger());
  t.after(() => a.close());
  assert.equal((await a.decide(req)).reason, 'one');
  a.update(cfg(two.url));
  assert.equal((await a.decide(req)).reason, 'two');
  a.update(null);
  assert.equal(a.enabled('client_connect'), false);
});
