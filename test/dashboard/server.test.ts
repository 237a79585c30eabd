// The dashboard's HTTP listener: security headers on every answer, the token (Basic and Bearer),
// the Host check on loopback, read-only methods, the stream limit, and that no secret of the
// white's config reaches any answer.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { Dashboard } from '../../src/dashboard/dashboard.js';
import { DashboardFeed, FEED_LIMITS } from '../../src/dashboard/feed.js';
import { DASHBOARD_LIMITS, DashboardServer, SECURITY_HEADERS } from '../../src/dashboard/server.js';
import { newGrayStats } from '../../src/engine/stats.js';
import { ErrorCodes, RelayError } from '../../src/errors.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { startTunnel, type Tunnel } from '../helpers/tunnel.js';

const TOKEN = 'dashboard-token-0123456789abcdef0123456789';

interface Answer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

function request(port: number, path: string, options: { method?: string; headers?: Record<string, string>; firstChunk?: boolean } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
        // A stream never ends: the retry line and the first message are enough.
        if (options.firstChunk && body.split('\n\n').length > 2) {
          res.destroy();
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

function requestBytes(port: number, path: string, headers: Record<string, string>): Promise<{ headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }));
      })
      .on('error', reject);
  });
}

/** Opens a stream and keeps it open; resolves once the answer's head is in. */
function openStream(port: number, headers: Record<string, string> = {}): Promise<{ res: http.IncomingMessage; text: () => string; close: () => void }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/api/events', headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      resolve({ res, text: () => text, close: () => req.destroy() });
    });
    req.on('error', reject);
  });
}

function assertSecurityHeaders(a: Answer, what: string): void {
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) assert.equal(a.headers[name], value, `${what}: ${name}`);
  assert.match(String(a.headers['content-security-policy']), /frame-ancestors 'none'/);
  assert.doesNotMatch(String(a.headers['content-security-policy']), /unsafe-inline|unsafe-eval/);
}

describe('dashboard server', () => {
  let tunnel: Tunnel;
  let feed: DashboardFeed;
  let open: DashboardServer;
  let locked: DashboardServer;
  let small: DashboardServer;
  const hookUrl = `https://hooks.example.com/${randomBytes(12).toString('hex')}`;

  before(async () => {
    tunnel = await startTunnel({ pool: 2 });
    // The hook URL is a secret of its own (webhook URLs often carry one): it is in the snapshot.
    const source = {
      version: 'test',
      snapshot: () => ({ ...tunnel.white.snapshot(), hooks: [{ url: hookUrl, delivered: 1, failed: 0, dropped: 0, queued: 0, lastError: null }] }),
    };
    feed = new DashboardFeed(source, { ...FEED_LIMITS, minUpdateIntervalMs: 50 });
    feed.start();
    open = new DashboardServer({ host: '127.0.0.1', port: 0, token: null, logger: silentLogger() }, feed);
    locked = new DashboardServer({ host: '127.0.0.1', port: 0, token: TOKEN, logger: silentLogger() }, feed);
    small = new DashboardServer({ host: '127.0.0.1', port: 0, token: null, logger: silentLogger(), limits: { ...DASHBOARD_LIMITS, maxStreams: 2 } }, new DashboardFeed(source));
    await Promise.all([open.start(), locked.start(), small.start()]);
  });
  after(async () => {
    await Promise.all([open.close(), locked.close(), small.close()]);
    feed.stop();
    await tunnel.stop();
  });

  it('serves the page, its script, its style sheet and its state, each with the security headers', async () => {
    const port = open.address!.port;
    const cases: Array<[string, RegExp]> = [
      ['/', /^text\/html/],
      ['/index.html', /^text\/html/],
      ['/app.js', /^text\/javascript/],
      ['/style.css', /^text\/css/],
      ['/api/state', /^application\/json/],
    ];
    for (const [path, type] of cases) {
      const a = await request(port, path);
      assert.equal(a.status, 200, path);
      assert.match(String(a.headers['content-type']), type, path);
      assertSecurityHeaders(a, path);
    }
    const page = await request(port, '/');
    assert.match(page.body, /<script type="module" src="app.js"><\/script>/);
    assert.doesNotMatch(page.body, /<script>|<style|\sstyle=|\son[a-z]+=/i, 'no inline script, style or handler for the CSP to block');
    const state = JSON.parse((await request(port, '/api/state')).body) as { grays: Array<{ id: string; online: boolean }> };
    assert.deepEqual(
      state.grays.map((g) => [g.id, g.online]),
      [['g1', true]],
    );
    for (const [path, status] of [
      ['/nope', 404],
      ['/../etc/passwd', 404],
    ] as const) {
      const a = await request(port, path);
      assert.equal(a.status, status, path);
      assertSecurityHeaders(a, path);
    }
  });

  it('is read-only: other methods get 405', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      const a = await request(open.address!.port, '/api/state', { method });
      assert.equal(a.status, 405, method);
      assert.equal(a.headers.allow, 'GET, HEAD');
      assertSecurityHeaders(a, method);
    }
  });

  it('without a token, answers only to an IP address or localhost in Host (DNS rebinding)', async () => {
    const port = open.address!.port;
    for (const host of ['evil.example.com', `evil.example.com:${port}`, 'localhost.evil.example']) {
      const a = await request(port, '/api/state', { headers: { host } });
      assert.equal(a.status, 421, host);
      assertSecurityHeaders(a, host);
    }
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, 'LOCALHOST']) {
      assert.equal((await request(port, '/api/state', { headers: { host } })).status, 200, host);
    }
  });

  it('with a token, the page, its files and its data all get 401 without it', async () => {
    const port = locked.address!.port;
    for (const path of ['/', '/app.js', '/style.css', '/api/state', '/api/events', '/nope']) {
      for (const authorization of [undefined, 'Bearer wrong-token', `Basic ${Buffer.from(`admin:${TOKEN}x`).toString('base64')}`, `Token ${TOKEN}`]) {
        const a = await request(port, path, { headers: authorization ? { authorization } : {} });
        assert.equal(a.status, 401, `${path} with ${authorization}`);
        assert.match(String(a.headers['www-authenticate']), /^Basic realm="relay dashboard"/);
        assertSecurityHeaders(a, path);
        assert.ok(!a.body.includes('"grays"'));
      }
    }
  });

  it('with a token, accepts it as a Bearer token or a Basic password (any user), whatever the Host', async () => {
    const port = locked.address!.port;
    const bearer = await request(port, '/api/state', { headers: { authorization: `Bearer ${TOKEN}`, host: 'relay.example.com' } });
    assert.equal(bearer.status, 200);
    const basic = await request(port, '/', { headers: { authorization: `Basic ${Buffer.from(`anyone:${TOKEN}`).toString('base64')}` } });
    assert.equal(basic.status, 200);
    assert.match(basic.body, /<title>/);
    const stream = await request(port, '/api/events', { headers: { authorization: `Bearer ${TOKEN}` }, firstChunk: true });
    assert.equal(stream.status, 200);
    assert.match(stream.body, /event: state/);
  });

  it('streams server-sent events: a state first, none from a current position', async () => {
    const port = open.address!.port;
    const first = await request(port, '/api/events', { firstChunk: true });
    assert.match(String(first.headers['content-type']), /^text\/event-stream/);
    assertSecurityHeaders(first, 'stream');
    assert.match(first.body, /^retry: 2000\n\nid: [A-Za-z0-9_-]+\.[0-9]+\nevent: state\ndata: \{/);
    const { epoch, seq } = feed.full();
    const s = await openStream(port, { 'last-event-id': `${epoch}.${seq}` });
    try {
      // The stream shows the next event, and only as a delta.
      feed.emit('gray.auth_failed', { grayId: 'nobody', remoteAddress: '127.0.0.9' });
      await new Promise<void>((resolve) => s.res.on('data', () => s.text().includes('event: delta') && resolve()));
      assert.doesNotMatch(s.text(), /event: state/);
      assert.match(s.text(), /"kind":"gray.auth_failed","grayId":"nobody"/);
    } finally {
      s.close();
    }
  });

  it(`refuses a stream past maxStreams with 503`, async () => {
    const port = small.address!.port;
    const streams = [await openStream(port), await openStream(port)];
    try {
      for (const s of streams) assert.equal(s.res.statusCode, 200);
      const third = await request(port, '/api/events');
      assert.equal(third.status, 503);
      assert.equal(third.headers['retry-after'], '10');
      assertSecurityHeaders(third, '503');
      assert.equal((await request(port, '/api/state')).status, 200, 'the state is still served');
    } finally {
      for (const s of streams) s.close();
    }
  });

  it('gzips a big state for a client that takes gzip, and says it varies', async (t) => {
    const grays = Array.from({ length: 200 }, (_, i) => ({ ...newGrayStats(), id: `gray-${i}`, publicPort: 20000 + i, dataPort: 30000 + i, connected: false }));
    const big = new DashboardFeed({ version: 'test', snapshot: () => ({ ...tunnel.white.snapshot(), grays }) });
    big.start();
    const server = new DashboardServer({ host: '127.0.0.1', port: 0, token: null, logger: silentLogger() }, big);
    await server.start();
    t.after(async () => {
      await server.close();
      big.stop();
    });
    const raw = await requestBytes(server.address!.port, '/api/state', { 'accept-encoding': 'gzip, deflate' });
    assert.equal(raw.headers['content-encoding'], 'gzip');
    assert.equal(raw.headers.vary, 'accept-encoding');
    const state = JSON.parse(gunzipSync(raw.body).toString('utf8')) as { grays: unknown[] };
    assert.equal(state.grays.length, 200);
    const plain = await requestBytes(server.address!.port, '/api/state', {});
    assert.equal(plain.headers['content-encoding'], undefined);
    assert.ok(raw.body.length * 5 < plain.body.length, `${raw.body.length} gzipped vs ${plain.body.length}`);
    const small = await requestBytes(open.address!.port, '/api/state', { 'accept-encoding': 'gzip' });
    assert.equal(small.headers['content-encoding'], undefined, 'a small state goes as it is');
  });

  it('warns when it listens beyond loopback, where the token crosses the network in clear', async () => {
    const lines: Array<{ msg: string; level: number }> = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(l) as { msg: string; level: number });
        done();
      },
    });
    const logger = createLogger({ level: 'info', destination });
    for (const host of ['127.0.0.1', '0.0.0.0']) {
      const dashboard = new Dashboard({ host, port: 0, token: TOKEN }, { version: 'test', snapshot: () => tunnel.white.snapshot() }, logger);
      await dashboard.start();
      await dashboard.close();
    }
    const warnings = lines.filter((l) => l.level === 40).map((l) => l.msg);
    assert.equal(lines.filter((l) => l.msg === 'dashboard listening').length, 2);
    assert.deepEqual(warnings, ['dashboard reachable from other machines over plain HTTP: its token crosses the network in clear; put TLS in front (docs/dashboard.md)']);
  });

  it('a port already taken is a clear LISTEN error, and nothing is left open', async () => {
    const taken = open.address!.port;
    const second = new DashboardServer({ host: '127.0.0.1', port: taken, token: null, logger: silentLogger() }, feed);
    await assert.rejects(second.start(), (err: unknown) => {
      assert.ok(err instanceof RelayError);
      assert.equal(err.code, ErrorCodes.LISTEN);
      assert.equal(err.message, `dashboard 127.0.0.1:${taken}: cannot listen (EADDRINUSE)`);
      return true;
    });
    assert.equal(second.address, null);
    await second.close();
  });

  it('never sends a secret: gray secrets, the token, hook URLs', async () => {
    const secret = tunnel.secret;
    const forms = [secret.toString('base64url'), secret.toString('base64'), secret.toString('hex'), TOKEN, hookUrl, 'hooks.example.com'];
    const texts = [
      (await request(open.address!.port, '/api/state')).body,
      (await request(open.address!.port, '/api/events', { firstChunk: true })).body,
      (await request(locked.address!.port, '/api/state', { headers: { authorization: `Bearer ${TOKEN}` } })).body,
      (await request(locked.address!.port, '/')).body,
    ];
    assert.match(texts[0]!, /"id":"g1"/, 'the state is there');
    for (const text of texts) for (const form of forms) assert.ok(!text.includes(form), `${form} leaked`);
  });
});
