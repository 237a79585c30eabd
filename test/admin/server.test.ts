// The admin API against a real WhiteServer in this process: socket permissions, the state document,
// bearer-token checks on the TCP listener, routes, bounds, and the socket file's life cycle.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstat, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, request } from 'undici';
import { AdminClient } from '../../src/admin/client.js';
import { METRICS_CONTENT_TYPE } from '../../src/admin/metrics.js';
import { AdminServer, type AdminState, type ReloadOutcome } from '../../src/admin/server.js';
import { VERSION } from '../../src/version.js';
import { ErrorCodes, isRelayError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { startTunnel, type Tunnel } from '../helpers/tunnel.js';

const TOKEN = 'test-token-0123456789abcdef0123456789abcdef';

describe('admin server', () => {
  let dir: string;
  let tunnel: Tunnel;
  let admin: AdminServer;
  let socket: string;
  let nextReload: ReloadOutcome = { ok: true, at: 1, error: null };
  let reloads = 0;
  const state = (): AdminState => ({ ...tunnel.white.snapshot(), version: VERSION });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'relay-admin-'));
    socket = join(dir, 'admin.sock');
    tunnel = await startTunnel({ pool: 2 });
    admin = new AdminServer(
      { socket, tcp: { host: '127.0.0.1', port: 0, token: TOKEN }, metrics: { host: '127.0.0.1', port: 0 }, logger: silentLogger() },
      {
        state,
        reload: async () => {
          reloads += 1;
          return nextReload;
        },
      },
    );
    await admin.start();
  });
  after(async () => {
    await admin?.close();
    await tunnel?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const tcpUrl = (path: string): string => `http://127.0.0.1:${admin.addresses.tcp!.port}${path}`;
  const metricsUrl = (path: string): string => `http://127.0.0.1:${admin.addresses.metrics!.port}${path}`;
  /** A raw request over the socket, so statuses and headers are visible. */
  const onSocket = async (method: 'GET' | 'POST', path: string, body?: string) => {
    const raw = new Client('http://localhost', { socketPath: socket });
    try {
      const res = await raw.request({ method, path, ...(body === undefined ? {} : { body }) });
      return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
    } finally {
      await raw.close();
    }
  };

  it('creates the socket with mode 0600', async () => {
    const st = await lstat(socket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
  });

  it('GET /v1/state returns the WhiteServer snapshot and the version', async () => {
    const client = new AdminClient({ socket });
    try {
      const got = await client.state();
      const expected = JSON.parse(JSON.stringify(state())) as AdminState;
      assert.deepEqual(got, expected);
      assert.equal(got.version, VERSION);
      assert.equal(got.grays.length, 1);
      assert.equal(got.grays[0]!.id, 'g1');
      assert.equal(got.grays[0]!.connected, true);
      assert.equal(got.grays[0]!.publicPort, tunnel.publicPort);
    } finally {
      await client.close();
    }
  });

  it('GET /metrics renders the snapshot as Prometheus text 0.0.4', async () => {
    const res = await onSocket('GET', '/metrics');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], METRICS_CONTENT_TYPE);
    assert.match(res.text, /^relay_gray_connected\{gray="g1"\} 1$/m);
  });

  it('POST /v1/reload runs a reload and returns its outcome: 200 applied, 422 rejected', async () => {
    const before = reloads;
    nextReload = { ok: true, at: 5, error: null };
    let res = await onSocket('POST', '/v1/reload');
    assert.equal(res.status, 200);
    assert.deepEqual(JSON.parse(res.text), nextReload);
    nextReload = { ok: false, at: 6, error: 'white.yaml: grays[1].public_port: clash' };
    const client = new AdminClient({ socket });
    try {
      assert.deepEqual(await client.reload(), nextReload);
    } finally {
      await client.close();
    }
    res = await onSocket('POST', '/v1/reload');
    assert.equal(res.status, 422);
    assert.equal(reloads, before + 3);
  });

  it('answers 404 for unknown routes and 405 for a wrong method', async () => {
    const missing = await onSocket('GET', '/v1/nothing');
    assert.equal(missing.status, 404);
    assert.match(missing.text, /no route/);
    const wrong = await onSocket('GET', '/v1/reload');
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.allow, 'POST');
  });

  it('refuses a request body over the cap with 413', async () => {
    const before = reloads;
    const res = await onSocket('POST', '/v1/reload', 'x'.repeat(4096));
    assert.equal(res.status, 413);
    assert.equal(reloads, before, 'the reload did not run');
  });

  it('TCP listener: 401 without a token or with a wrong one, 200 with the right one', async () => {
    const none = await request(tcpUrl('/v1/state'));
    assert.equal(none.statusCode, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer');
    await none.body.text();
    for (const authorization of [`Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, `Basic ${TOKEN}`, 'Bearer ', TOKEN]) {
      const res = await request(tcpUrl('/v1/state'), { headers: { authorization } });
      assert.equal(res.statusCode, 401, authorization);
      await res.body.text();
    }
    // Even unknown routes do not answer before the token is checked.
    const probe = await request(tcpUrl('/v1/nothing'));
    assert.equal(probe.statusCode, 401);
    await probe.body.text();

    const ok = await request(tcpUrl('/v1/state'), { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(ok.statusCode, 200);
    const body = (await ok.body.json()) as AdminState;
    assert.equal(body.grays[0]!.id, 'g1');
    const client = new AdminClient({ url: tcpUrl(''), token: TOKEN });
    try {
      assert.equal((await client.state()).version, VERSION);
    } finally {
      await client.close();
    }
  });

  it('metrics listener serves /metrics and /healthz only, without a token', async () => {
    const res = await request(metricsUrl('/metrics'));
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], METRICS_CONTENT_TYPE);
    const text = await res.body.text();
    assert.match(text, /relay_pool_target_connections\{gray="g1"\}/);
    assert.match(text, /^nodejs_eventloop_lag_p99_seconds \S+$/m, 'event-loop lag once the listener samples it');
    const health = await request(metricsUrl('/healthz'));
    assert.equal(health.statusCode, 200);
    assert.equal(await health.body.text(), 'ok\n');
    for (const path of ['/v1/state', '/', '/metrics/x']) {
      const other = await request(metricsUrl(path));
      assert.equal(other.statusCode, 404, path);
      await other.body.text();
    }
    const post = await request(metricsUrl('/v1/reload'), { method: 'POST' });
    assert.equal(post.statusCode, 404);
    await post.body.text();
  });

  it('refuses to start on a socket another live process serves, and leaves that socket alone', async () => {
    const second = new AdminServer({ socket, tcp: null, metrics: null, logger: silentLogger() }, { state, reload: async () => nextReload });
    await assert.rejects(second.start(), (err) => isRelayError(err, ErrorCodes.LISTEN) && /in use/.test(err.message));
    const client = new AdminClient({ socket });
    try {
      assert.equal((await client.state()).version, VERSION, 'the first server still answers');
    } finally {
      await client.close();
    }
  });
});

describe('admin socket life cycle', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'relay-admin-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const emptyState = (): AdminState => ({
    configPath: null,
    startedAt: 0,
    grays: [],
    counters: { authFailures: 0, dataRejections: {}, controlRejections: {}, reloads: { ok: 0, rejected: 0 }, lastReload: null },
    hooks: [],
    version: VERSION,
  });
  const server = (socket: string): AdminServer =>
    new AdminServer({ socket, tcp: null, metrics: null, logger: silentLogger() }, { state: emptyState, reload: async () => ({ ok: true, at: 0, error: null }) });

  it('replaces a stale socket left by a killed process, and removes its own on close', async () => {
    const socket = join(dir, 'stale.sock');
    // A process that dies by SIGKILL while listening leaves its socket file behind.
    const script = `require('node:net').createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, 'SIGKILL'))`;
    spawnSync(process.execPath, ['-e', script]);
    assert.ok((await lstat(socket)).isSocket(), 'the stale socket file exists');
    const admin = server(socket);
    await admin.start();
    const client = new AdminClient({ socket });
    try {
      assert.equal((await client.state()).grays.length, 0);
    } finally {
      await client.close();
    }
    await admin.close();
    await assert.rejects(lstat(socket), { code: 'ENOENT' });
  });

  it('never removes a regular file in the socket path', async () => {
    const path = join(dir, 'not-a-socket');
    await writeFile(path, 'keep me');
    await assert.rejects(server(path).start(), (err) => isRelayError(err, ErrorCodes.LISTEN) && /not a socket/.test(err.message));
    assert.equal(await readFile(path, 'utf8'), 'keep me');
  });

  it('client: nothing listening is ADMIN_UNREACHABLE with a plain sentence', async () => {
    const path = join(dir, 'nobody.sock');
    const client = new AdminClient({ socket: path });
    try {
      await assert.rejects(client.state(), (err) => {
        assert.ok(isRelayError(err, ErrorCodes.ADMIN_UNREACHABLE));
        assert.equal(err.message, `the white is not running (no admin socket at ${path})`);
        return true;
      });
    } finally {
      await client.close();
    }
  });
});
