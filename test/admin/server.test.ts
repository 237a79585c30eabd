// The admin API against a real WhiteServer in this process: socket permissions, the state document,
// the challenge-response and single-use macs of the TCP listener, routes, bounds, and the socket file's life cycle.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstat, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { Client, request } from 'undici';
import { checkServerProof, CLIENT_NONCE_HEADER, newNonce, requestAuthorization } from '../../src/admin/admin-auth.js';
import { AdminClient } from '../../src/admin/client.js';
import { METRICS_CONTENT_TYPE } from '../../src/admin/metrics.js';
import { ADMIN_LIMITS, AdminServer, type AdminState, type ReloadOutcome } from '../../src/admin/server.js';
import { parseWhiteConfig } from '../../src/config/load.js';
import { VERSION } from '../../src/version.js';
import { ErrorCodes, isRelayError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { startTunnel, type Tunnel } from '../helpers/tunnel.js';
import { emptyAdminState } from '../helpers/admin-state.js';

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

  /** Step 1 and 2 of the scheme by hand: a challenge and its proof. */
  const challenge = async (clientNonce = newNonce()): Promise<{ nonce: string; proof: string; clientNonce: string }> => {
    const res = await request(tcpUrl('/v1/challenge'), { method: 'POST', headers: { [CLIENT_NONCE_HEADER]: clientNonce } });
    assert.equal(res.statusCode, 200);
    return { ...((await res.body.json()) as { nonce: string; proof: string }), clientNonce };
  };
  const withAuth = async (method: 'GET' | 'POST', path: string, authorization: string) => {
    const res = await request(tcpUrl(path), { method, headers: { authorization } });
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
  };

  it('TCP listener: 401 without authorization, with the bare token, or with a wrong mac; 200 with a fresh mac', async () => {
    const none = await request(tcpUrl('/v1/state'));
    assert.equal(none.statusCode, 401);
    assert.equal(none.headers['www-authenticate'], 'Relay-Admin');
    await none.body.text();
    // Even unknown routes do not answer before the authorization is checked.
    assert.equal((await withAuth('GET', '/v1/nothing', 'x')).status, 401);

    const { nonce, proof, clientNonce } = await challenge();
    assert.ok(checkServerProof(TOKEN, clientNonce, nonce, proof), 'the white proves it holds the token');
    assert.ok(!checkServerProof(`${TOKEN}x`, clientNonce, nonce, proof), 'the proof depends on the token');
    const wrong = [
      `Bearer ${TOKEN}`,
      TOKEN,
      requestAuthorization(`${TOKEN}x`, nonce, 'GET', '/v1/state'),
      requestAuthorization(TOKEN, nonce, 'POST', '/v1/state'),
      requestAuthorization(TOKEN, nonce, 'GET', '/v1/reload'),
      requestAuthorization(TOKEN, newNonce(), 'GET', '/v1/state'),
    ];
    for (const authorization of wrong) assert.equal((await withAuth('GET', '/v1/state', authorization)).status, 401, authorization);
    // Each attempt used up the nonce it named: this one is gone, even with the right mac now.
    assert.equal((await withAuth('GET', '/v1/state', requestAuthorization(TOKEN, nonce, 'GET', '/v1/state'))).status, 401);

    const fresh = await challenge();
    const ok = await withAuth('GET', '/v1/state', requestAuthorization(TOKEN, fresh.nonce, 'GET', '/v1/state'));
    assert.equal(ok.status, 200);
    assert.equal((JSON.parse(ok.text) as AdminState).grays[0]!.id, 'g1');
    const client = new AdminClient({ url: tcpUrl(''), token: TOKEN });
    assert.equal((await client.state()).version, VERSION);
    assert.match(await client.metrics(), /relay_gray_connected/);
  });

  it('TCP listener: a request seen on the wire and replayed is refused (each nonce is accepted once)', async () => {
    const before = reloads;
    nextReload = { ok: true, at: 7, error: null };
    const { nonce } = await challenge();
    const authorization = requestAuthorization(TOKEN, nonce, 'POST', '/v1/reload');
    assert.equal((await withAuth('POST', '/v1/reload', authorization)).status, 200);
    const replayed = await withAuth('POST', '/v1/reload', authorization);
    assert.equal(replayed.status, 401);
    assert.match(replayed.text, /missing, wrong or reused/);
    assert.equal(reloads, before + 1, 'the replay ran no reload');
  });

  it('TCP listener: a challenge needs a client nonce of 32 random bytes', async () => {
    for (const headers of [{}, { [CLIENT_NONCE_HEADER]: 'short' }, { [CLIENT_NONCE_HEADER]: `${newNonce()}=` }]) {
      const res = await request(tcpUrl('/v1/challenge'), { method: 'POST', headers });
      assert.equal(res.statusCode, 400);
      await res.body.text();
    }
  });

  it('a client given the wrong token stops at the proof, before sending anything replayable', async () => {
    const client = new AdminClient({ url: tcpUrl(''), token: `${TOKEN.slice(0, -1)}!` });
    await assert.rejects(client.state(), (err) => isRelayError(err, ErrorCodes.ADMIN_UNREACHABLE) && /did not prove it knows admin\.tcp\.token/.test(err.message));
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

  const emptyState = emptyAdminState;
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

describe('admin TCP challenges: bounds', () => {
  const state = emptyAdminState;
  let now = 1_000_000;
  let admin: AdminServer;
  before(async () => {
    admin = new AdminServer(
      { socket: null, tcp: { host: '127.0.0.1', port: 0, token: TOKEN }, metrics: null, logger: silentLogger(), now: () => now },
      { state, reload: async () => ({ ok: true, at: 0, error: null }) },
    );
    await admin.start();
  });
  after(async () => {
    await admin?.close();
  });
  const url = (path: string): string => `http://127.0.0.1:${admin.addresses.tcp!.port}${path}`;
  const challenge = async (): Promise<string> => {
    const res = await request(url('/v1/challenge'), { method: 'POST', headers: { [CLIENT_NONCE_HEADER]: newNonce() } });
    return ((await res.body.json()) as { nonce: string }).nonce;
  };
  const use = async (nonce: string): Promise<number> => {
    const res = await request(url('/v1/state'), { headers: { authorization: requestAuthorization(TOKEN, nonce, 'GET', '/v1/state') } });
    await res.body.text();
    return res.statusCode;
  };

  it(`a nonce is good for ${ADMIN_LIMITS.challengeTtlMs} ms, not a millisecond more`, async () => {
    const inTime = await challenge();
    const late = await challenge();
    now += ADMIN_LIMITS.challengeTtlMs;
    assert.equal(await use(inTime), 200);
    now += 1;
    assert.equal(await use(late), 401);
  });

  it(`at most ${ADMIN_LIMITS.maxOutstandingChallenges} challenges are kept: past it the oldest is forgotten`, async () => {
    const oldest = await challenge();
    const second = await challenge();
    // Filled to the limit through the client, as a local user asking in a loop would.
    const client = new Client(url(''), { pipelining: 16 });
    try {
      const asks = Array.from({ length: ADMIN_LIMITS.maxOutstandingChallenges - 1 }, async () => {
        const res = await client.request({ method: 'POST', path: '/v1/challenge', headers: { [CLIENT_NONCE_HEADER]: newNonce() } });
        assert.equal(res.statusCode, 200);
        await res.body.text();
      });
      await Promise.all(asks);
    } finally {
      await client.close();
    }
    assert.equal(await use(oldest), 401, 'the oldest was forgotten when the limit was crossed');
    assert.equal(await use(second), 200, 'the next one is still there');
  });
});

describe('admin token: the config validation and the admin server agree', () => {
  const tokenArb = fc.oneof(
    fc.string({ minLength: 28, maxLength: 48 }),
    fc.string({ unit: fc.constantFrom('a', 'Z', '0', '~', '!', ' ', '\t', 'é', '"', '\\'), minLength: 30, maxLength: 40 }),
    fc.constantFrom(`correct horse battery staple ${'x'.repeat(8)}`, ' '.repeat(37), `${'t'.repeat(32)} `, 't'.repeat(1025), 't'.repeat(1024)),
  );
  const accepts = async (token: string): Promise<boolean> => {
    const admin = new AdminServer(
      { socket: null, tcp: { host: '127.0.0.1', port: 0, token }, metrics: null, logger: silentLogger() },
      { state: () => ({ ...emptyStateForTokens(), version: VERSION }), reload: async () => ({ ok: true, at: 0, error: null }) },
    );
    try {
      await admin.start();
    } catch (err) {
      assert.ok(isRelayError(err, ErrorCodes.CONFIG_INVALID), String(err));
      return false;
    }
    try {
      await new AdminClient({ url: `http://127.0.0.1:${admin.addresses.tcp!.port}`, token }).state();
      return true;
    } finally {
      await admin.close();
    }
  };
  const validates = async (token: string): Promise<boolean> => {
    const text = `control: { listen: "127.0.0.1:7000" }\nadmin: { socket: null, tcp: { listen: "127.0.0.1:7001", token: ${JSON.stringify(token)} } }\ngrays: []\n`;
    return parseWhiteConfig(text, null).then(
      () => true,
      () => false,
    );
  };

  it('a token validates exactly when the server accepts requests made with it', async () => {
    await fc.assert(
      fc.asyncProperty(tokenArb, async (token) => {
        assert.equal(await accepts(token), await validates(token), JSON.stringify(token));
      }),
      { numRuns: 60 },
    );
  });

  it('a token with spaces fails validation with a message saying so (and never shows the token)', async () => {
    const token = `correct horse battery staple ${'x'.repeat(8)}`;
    const text = `control: { listen: "127.0.0.1:7000" }\nadmin: { socket: null, tcp: { listen: "127.0.0.1:7001", token: "${token}" } }\ngrays: []\n`;
    await assert.rejects(parseWhiteConfig(text, 'w.yaml'), (err) => {
      assert.ok(isRelayError(err, ErrorCodes.CONFIG_INVALID));
      assert.match(err.message, /admin\.tcp\.token: has a space at position 8; a token is visible ASCII characters only \(no spaces, tabs or line breaks\)/);
      assert.ok(!err.message.includes('horse'), 'the token is not in the message');
      return true;
    });
  });
});

function emptyStateForTokens(): Omit<AdminState, 'version'> {
  return {
    configPath: null,
    startedAt: 0,
    grays: [],
    counters: { authFailures: 0, dataRejections: {}, controlRejections: {}, reloads: { ok: 0, rejected: 0 }, lastReload: null },
    hooks: [],
  };
}
