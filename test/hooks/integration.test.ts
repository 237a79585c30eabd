// Hooks wired into the running engine, exactly as `relay white` wires them (src/cli/run-white.ts):
// a WhiteServer whose event sink, gates and hook stats come from one WhiteHooks, a real GrayAgent,
// a real TCP service, and real HTTP receivers on 127.0.0.1. Everything waits for events (a request
// reaching a receiver, a socket closing, an agent event); nothing sleeps for a fixed time, and no
// assertion is about a duration.
//
// Engine bugs these tests expose (src/engine is not ours to edit; they fail until it is fixed):
//  - bytes to the client are counted from the white's data socket's bytesRead, which includes the
//    60-byte preamble the gray sent before pairing: client.disconnected's bytesToClient and
//    relay_client_sent_bytes_total are 60 too high per connection;
//  - the authorize request for client_connect has no connection_id (docs/hooks.md says it carries
//    the id used in client.* events): the engine's Gate gets no id, PoolBroker makes it later.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Webhook } from 'standardwebhooks';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { AuthorizeHookConfig, HookConfig, WhiteConfig } from '../../src/config/types.js';
import { GrayAgent, type GrayAgentEvents } from '../../src/engine/gray/agent.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { renderMetrics } from '../../src/admin/metrics.js';
import type { WebhookBody } from '../../src/hooks/dispatcher.js';
import { WhiteHooks } from '../../src/hooks/white-hooks.js';
import type { Limits } from '../../src/limits.js';
import { silentLogger } from '../../src/log.js';
import { echoHandler, grayConfigFor, startService, whiteConfigFor, type ServiceHandler } from '../helpers/tunnel.js';
import { testDataPlane } from '../helpers/data-plane.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ISO_MS_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
/** How long a test waits for something that should happen at once before it calls it missing. */
const EXPECT_WITHIN_MS = 8_000;
const HOOK_DENIED = 'RELAY_ERR_HOOK_DENIED';

// ---------------------------------------------------------------------------------------------
// An HTTP receiver: records every request with its raw body, answers through a replaceable
// function (or leaves the request hanging), and lets a test wait for a request it expects.

interface Hit {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly raw: Buffer;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
}

/** Answer a request now, or return 'hang' to leave it open until release(). */
type Answer = (hit: Hit) => 'hang' | void;

const noContent: Answer = (h) => void h.res.writeHead(204).end();
const hang: Answer = () => 'hang';
const json =
  (value: unknown): Answer =>
  (h) =>
    void h.res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(value));

class Receiver {
  readonly hits: Hit[] = [];
  private readonly hung: Hit[] = [];
  private waiters: Array<{ pred: (h: Hit) => boolean; resolve: (h: Hit) => void }> = [];

  private constructor(
    private readonly server: HttpServer,
    readonly port: number,
    private answer: Answer,
  ) {}

  static async start(answer: Answer = noContent): Promise<Receiver> {
    let self: Receiver | null = null;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => self?.onRequest({ path: req.url ?? '', headers: req.headers, raw: Buffer.concat(chunks), req, res }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    self = new Receiver(server, (server.address() as AddressInfo).port, answer);
    return self;
  }

  url(path = '/hook'): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  setAnswer(answer: Answer): void {
    this.answer = answer;
  }

  /** Answer every hanging request (and every later one) with `answer`. */
  release(answer: Answer = noContent): void {
    this.answer = answer;
    for (const h of this.hung.splice(0)) if (this.answer(h) === 'hang') this.hung.push(h);
  }

  /** The first request (already received or still to come) that matches. */
  waitFor(pred: (h: Hit) => boolean, what: string): Promise<Hit> {
    const seen = this.hits.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<Hit>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`receiver :${this.port}: no ${what} within ${EXPECT_WITHIN_MS} ms; got ${this.hits.length} request(s): ${this.summary()}`));
      }, EXPECT_WITHIN_MS);
      const waiter = {
        pred,
        resolve: (h: Hit) => {
          clearTimeout(timer);
          resolve(h);
        },
      };
      this.waiters.push(waiter);
    });
  }

  /** Webhook bodies received on `path`, in arrival order. */
  events(path = '/hook'): WebhookBody[] {
    return this.hits.filter((h) => h.path === path).map(body);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onRequest(hit: Hit): void {
    this.hits.push(hit);
    if (this.answer(hit) === 'hang') this.hung.push(hit);
    const ready = this.waiters.filter((w) => w.pred(hit));
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve(hit);
  }

  private summary(): string {
    return this.hits.map((h) => `${h.path} ${h.raw.toString('utf8').slice(0, 120)}`).join(' | ');
  }
}

function body(h: Hit): WebhookBody {
  return JSON.parse(h.raw.toString('utf8')) as WebhookBody;
}

/** A webhook request carrying an event of this type (and matching `data`, if given). */
function isEvent(type: string, data: (d: Record<string, unknown>) => boolean = () => true, path = '/hook') {
  return (h: Hit): boolean => {
    if (h.path !== path) return false;
    const b = body(h);
    return b.type === type && data(b.data as Record<string, unknown>);
  };
}

/**
 * Verify a request the way docs/hooks.md tells a receiver to: the Standard Webhooks library
 * (npm standardwebhooks), with the secret as whsec_ and standard base64 of its bytes, over the raw
 * body (it also refuses a timestamp more than 5 minutes off). Returns null when it verifies,
 * otherwise what is wrong.
 */
function signatureProblem(h: Hit, secret: Buffer | string): string | null {
  const key = typeof secret === 'string' ? secret : `whsec_${secret.toString('base64')}`;
  try {
    new Webhook(key).verify(h.raw.toString('utf8'), h.headers as Record<string, string>);
    return null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

function assertSignedWebhook(h: Hit, secret: Buffer, startedAt: number): WebhookBody {
  assert.equal(signatureProblem(h, secret), null, `signature of ${h.raw.toString('utf8')}`);
  assert.match(String(h.headers['webhook-id']), UUID);
  assert.equal(h.headers['content-type'], 'application/json');
  assert.match(String(h.headers['user-agent']), /^relay\/\d/);
  const b = body(h);
  assert.deepEqual(Object.keys(b).sort(), ['data', 'id', 'time', 'type']);
  assert.match(b.id, UUID);
  assert.match(b.time, ISO_MS_UTC);
  const t = Date.parse(b.time);
  assert.ok(t >= startedAt - 1_000 && t <= Date.now() + 1_000, `event time ${b.time} outside the test`);
  assert.equal(typeof b.data, 'object');
  return b;
}

/** Teardown steps run in reverse order of registration (the stack before its receivers). */
function cleanup(t: TestContext): (fn: () => Promise<void>) => void {
  const steps: Array<() => Promise<void>> = [];
  t.after(async () => {
    for (const step of steps.reverse()) await step();
  });
  return (fn) => void steps.push(fn);
}

// ---------------------------------------------------------------------------------------------
// The white as run-white.ts builds it, a gray, a service, and TCP clients.

interface Stack {
  readonly white: WhiteServer;
  readonly hooks: WhiteHooks;
  readonly config: WhiteConfig;
  readonly secret: Buffer;
  readonly publicPort: number;
  readonly servicePort: number;
  /** Connections the service has accepted. */
  serviceConnections(): number;
  /** Start a gray agent (the right one by default); stop() stops it. */
  gray(opts?: { id?: string; secret?: Buffer }): GrayAgent;
  /** What the CLI's Reloader does with a new, valid config. */
  reload(next: WhiteConfig): Promise<void>;
  stop(): Promise<void>;
}

async function startStack(
  o: { hooks?: HookConfig[]; authorize?: AuthorizeHookConfig | null; limits?: Partial<Limits>; service?: ServiceHandler } = {},
): Promise<Stack> {
  let accepted = 0;
  const handler = o.service ?? echoHandler;
  const service = await startService((s) => {
    accepted += 1;
    handler(s);
  });
  const secret = randomBytes(32);
  const config = whiteConfigFor([{ id: 'g1', secret, publicPort: 0, dataPort: 0 }], o.limits ?? {}, {
    hooks: o.hooks ?? [],
    authorize: o.authorize ?? null,
  });
  const logger = silentLogger();
  // The same three lines as src/cli/run-white.ts.
  const hooks = new WhiteHooks(config, logger);
  const white = new WhiteServer(config, { dataPlane: testDataPlane(), logger, events: hooks, gates: hooks.gates(), hookStats: () => hooks.stats() });
  await white.start();
  const grays: GrayAgent[] = [];
  let stopping: Promise<void> | null = null;
  const ports = white.portsOf('g1');
  assert.ok(ports);
  return {
    white,
    hooks,
    config,
    secret,
    publicPort: ports.publicPort,
    servicePort: service.port,
    serviceConnections: () => accepted,
    gray(g = {}) {
      const agent = new GrayAgent(grayConfigFor(g.id ?? 'g1', g.secret ?? secret, white.controlPort, service.port, { pool: 4 }), silentLogger(), { dataPlane: testDataPlane() });
      grays.push(agent);
      agent.start();
      return agent;
    },
    async reload(next) {
      // src/cli/reloader.ts: apply to the engine, then to the hooks.
      await white.applyConfig(next);
      hooks.update(next);
      white.gatesChanged();
    },
    stop() {
      stopping ??= (async () => {
        for (const g of grays) await g.stop(200);
        await white.stop(200);
        // Before the receivers go away, so queued events are delivered rather than retried.
        await hooks.close();
        await new Promise<void>((resolve) => service.server.close(() => resolve()));
      })();
      return stopping;
    },
  };
}

/** Resolves with the agent's next `name` event, or rejects after EXPECT_WITHIN_MS. */
function next<K extends keyof GrayAgentEvents>(agent: GrayAgent, name: K): Promise<GrayAgentEvents[K][0]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gray agent: no '${name}' within ${EXPECT_WITHIN_MS} ms`)), EXPECT_WITHIN_MS);
    const listener = (arg: GrayAgentEvents[K][0]): void => {
      clearTimeout(timer);
      resolve(arg);
    };
    agent.once(name, listener as never);
  });
}

async function grayReady(stack: Stack): Promise<GrayAgent> {
  const agent = stack.gray();
  const connected = next(agent, 'connected');
  await next(agent, 'pool-ready');
  await connected;
  return agent;
}

/** Connect, send `payload`, half-close, read until EOF. Resolves with the reply and the client's own port. */
function exchange(port: number, payload: Buffer): Promise<{ reply: Buffer; localPort: number }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    let localPort = -1;
    socket.on('connect', () => {
      localPort = socket.localPort ?? -1;
      socket.end(payload);
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      socket.end();
      resolve({ reply: Buffer.concat(chunks), localPort });
    });
    socket.on('error', reject);
  });
}

/**
 * Connect, send `payload`, and resolve once the other side has closed the connection. If bytes come
 * back instead (the client was let through to the echo service), resolve at once with them, so
 * the caller's "received nothing" assertion fails instead of the test waiting for its timeout.
 */
function refused(port: number, payload: Buffer): Promise<{ received: Buffer; localPort: number }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    let localPort = -1;
    socket.on('connect', () => {
      localPort = socket.localPort ?? -1;
      socket.write(payload);
    });
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      socket.destroy();
    });
    socket.on('error', () => {}); // a reset is one way of being refused
    socket.on('close', () => resolve({ received: Buffer.concat(chunks), localPort }));
  });
}

/** `name{labels} value` lines of a Prometheus exposition as a map. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

function hookConfig(url: string, over: Partial<HookConfig> = {}): HookConfig {
  return { url, events: [], secret: null, timeoutMs: 2_000, ...over };
}

function authorizeConfig(url: string, over: Partial<AuthorizeHookConfig> = {}): AuthorizeHookConfig {
  return { url, secret: null, timeoutMs: 2_000, onTimeout: 'deny', grayLogin: false, clientConnect: true, ...over };
}

// ---------------------------------------------------------------------------------------------
// Webhooks

test('webhooks: a gray session and a client connection produce signed, ordered events', { timeout: 20_000 }, async (t) => {
  const defer = cleanup(t);
  const startedAt = Date.now();
  const receiver = await Receiver.start();
  defer(() => receiver.close());
  const hookSecret = randomBytes(32);
  const stack = await startStack({ hooks: [hookConfig(receiver.url(), { secret: hookSecret })] });
  defer(() => stack.stop());

  const agent = stack.gray();
  const agentConnected = next(agent, 'connected');
  await next(agent, 'pool-ready');
  const { sessionId } = await agentConnected;

  const grayConnected = await receiver.waitFor(isEvent('gray.connected'), 'gray.connected');
  assert.deepEqual(assertSignedWebhook(grayConnected, hookSecret, startedAt).data, { grayId: 'g1', remoteAddress: '127.0.0.1', sessionId });

  // A known transfer: 12,345 bytes up, the same 12,345 echoed back.
  const payload = randomBytes(12_345);
  const { reply, localPort } = await exchange(stack.publicPort, payload);
  assert.ok(reply.equals(payload), 'echo through the tunnel');
  const clientAddress = `127.0.0.1:${localPort}`;

  const connected = await receiver.waitFor(isEvent('client.connected', (d) => d.clientAddress === clientAddress), 'client.connected');
  const c = assertSignedWebhook(connected, hookSecret, startedAt).data as Record<string, unknown>;
  assert.equal(c.grayId, 'g1');
  assert.match(String(c.connectionId), UUID);
  const disconnected = await receiver.waitFor(isEvent('client.disconnected', (d) => d.connectionId === c.connectionId), 'client.disconnected');
  const d = assertSignedWebhook(disconnected, hookSecret, startedAt).data as Record<string, unknown>;
  assert.equal(d.grayId, 'g1');
  assert.equal(d.clientAddress, clientAddress);
  assert.equal(d.reason, 'closed');
  assert.equal(typeof d.durationMs, 'number');
  assert.ok(Number.isInteger(d.durationMs) && (d.durationMs as number) >= 0, `durationMs ${String(d.durationMs)}`);

  // The gray leaves: its session ends with the gray's own reason.
  await agent.stop(200);
  const grayGone = await receiver.waitFor(isEvent('gray.disconnected'), 'gray.disconnected');
  const g = assertSignedWebhook(grayGone, hookSecret, startedAt).data as Record<string, unknown>;
  assert.equal(g.grayId, 'g1');
  assert.equal(g.remoteAddress, '127.0.0.1');
  assert.equal(g.sessionId, sessionId);
  assert.match(String(g.reason), /RELAY_ERR_SHUTDOWN/);
  assert.match(String(g.reason), /shutting down/);

  // One request at a time per hook: the receiver saw them in the order they happened, each
  // delivery with its own id, the same event id nowhere twice.
  const types = receiver.events().map((e) => e.type);
  assert.deepEqual(types, ['gray.connected', 'client.connected', 'client.disconnected', 'gray.disconnected']);
  const deliveryIds = receiver.hits.map((h) => h.headers['webhook-id']);
  assert.equal(new Set(deliveryIds).size, deliveryIds.length);
  assert.equal(new Set(receiver.events().map((e) => e.id)).size, receiver.events().length);

  // Bytes each way equal the transfer. Checked last, so that the engine's preamble bug (see the
  // top of the file) hides none of the checks above.
  assert.equal(d.bytesFromClient, payload.length, 'bytesFromClient');
  assert.equal(d.bytesToClient, payload.length, 'bytesToClient must be the bytes the client received (no 60-byte data preamble)');
});

test('webhooks: a gray with a wrong secret, or an unknown id, produces gray.auth_failed', { timeout: 20_000 }, async (t) => {
  const defer = cleanup(t);
  const startedAt = Date.now();
  const receiver = await Receiver.start();
  defer(() => receiver.close());
  const hookSecret = randomBytes(32);
  const stack = await startStack({ hooks: [hookConfig(receiver.url(), { secret: hookSecret, events: ['gray.auth_failed', 'gray.connected'] })] });
  defer(() => stack.stop());

  const impostor = stack.gray({ secret: randomBytes(32) });
  // The gray checks the white's proof first and hangs up without revealing its own.
  const why = await next(impostor, 'disconnected');
  assert.equal(why.code, 'RELAY_ERR_WHITE_PROOF_INVALID');
  const failed = await receiver.waitFor(isEvent('gray.auth_failed'), 'gray.auth_failed for g1');
  assert.deepEqual(assertSignedWebhook(failed, hookSecret, startedAt).data, { grayId: 'g1', remoteAddress: '127.0.0.1', suppressed: 0 });
  await impostor.stop(0);

  // An id the white does not know is reported as claimed.
  const stranger = stack.gray({ id: 'nobody', secret: randomBytes(32) });
  const ghost = await receiver.waitFor(isEvent('gray.auth_failed', (d) => d.grayId === 'nobody'), 'gray.auth_failed for an unknown id');
  assert.deepEqual(body(ghost).data, { grayId: 'nobody', remoteAddress: '127.0.0.1', suppressed: 0 });
  await stranger.stop(0);

  assert.ok(stack.white.counters.authFailures >= 2, `authFailures ${stack.white.counters.authFailures}`);
  const m = parseMetrics(renderMetrics(stack.white.snapshot(), stack.white.dataPlane.name));
  assert.ok((m.get('relay_auth_failures_total') ?? 0) >= 2);
  assert.equal(receiver.events().some((e) => e.type === 'gray.connected'), false, 'no gray logged in');
});

test('webhooks: a receiver that never answers does not hold up clients', { timeout: 20_000 }, async (t) => {
  const defer = cleanup(t);
  const receiver = await Receiver.start(hang);
  defer(() => receiver.close());
  // Long hook timeout: the first event stays in flight for the whole test; everything else queues.
  const stack = await startStack({ hooks: [hookConfig(receiver.url(), { timeoutMs: 60_000 })] });
  defer(() => stack.stop());
  await grayReady(stack);
  await receiver.waitFor(isEvent('gray.connected'), 'gray.connected (left hanging)');

  const clients = 50;
  for (let i = 0; i < clients; i++) {
    const payload = Buffer.from(`client ${i} ${randomBytes(16).toString('hex')}`);
    const { reply } = await exchange(stack.publicPort, payload);
    assert.ok(reply.equals(payload), `client ${i}: echo`);
  }

  // Nothing more reached the receiver: one request in flight, the rest queued, nothing lost.
  assert.equal(receiver.hits.length, 1, 'only the first event was sent');
  // One snapshot (it hears the engine's held events first), then the hook's stats at that moment.
  const snapshot = stack.white.snapshot();
  const [stats] = stack.hooks.stats();
  assert.ok(stats);
  assert.equal(stats.delivered, 0);
  assert.equal(stats.failed, 0);
  assert.equal(stats.dropped, 0);
  // gray.connected in flight + 50 client.connected + up to 50 client.disconnected (the last
  // clients' pairs may still be closing).
  assert.ok(stats.queued >= 1 + clients && stats.queued <= 1 + 2 * clients, `queued ${stats.queued}`);
  assert.equal(snapshot.grays[0]?.clientsTotal, clients);
  const m = parseMetrics(renderMetrics(snapshot, stack.white.dataPlane.name));
  assert.equal(m.get(`relay_hook_queued_events{url="${receiver.url()}"}`), stats.queued);

  // The receiver wakes up: every event arrives, in order, none dropped. One request at a time,
  // so when the last one arrives all the others have been settled.
  receiver.release();
  const total = 1 + 2 * clients;
  await receiver.waitFor(() => receiver.hits.length >= total, `${total} events`);
  const after = stack.hooks.stats()[0];
  assert.deepEqual(
    after && { delivered: after.delivered, failed: after.failed, dropped: after.dropped, queued: after.queued },
    { delivered: total - 1, failed: 0, dropped: 0, queued: 1 },
  );
  const events = receiver.events();
  assert.equal(events.filter((e) => e.type === 'client.connected').length, clients);
  assert.equal(events.filter((e) => e.type === 'client.disconnected').length, clients);
  // Each client's disconnect comes after its connect.
  const firstSeen = new Map<unknown, number>();
  events.forEach((e, i) => {
    const id = (e.data as Record<string, unknown>).connectionId;
    if (e.type === 'client.connected') firstSeen.set(id, i);
    if (e.type === 'client.disconnected') assert.ok((firstSeen.get(id) ?? Infinity) < i, `disconnect before connect for ${String(id)}`);
  });
});

// ---------------------------------------------------------------------------------------------
// The authorize hook

test('authorize client_connect: deny closes the client before the service; allow forwards it', { timeout: 20_000 }, async (t) => {
  const defer = cleanup(t);
  const startedAt = Date.now();
  const oracle = await Receiver.start(json({ allow: false, reason: 'nope' }));
  defer(() => oracle.close());
  const authSecret = randomBytes(32);
  const stack = await startStack({ authorize: authorizeConfig(oracle.url('/authorize'), { secret: authSecret }) });
  defer(() => stack.stop());
  await grayReady(stack);
  assert.equal(oracle.hits.length, 0, 'gray_login is off: the login was not asked about');

  const denied = await refused(stack.publicPort, Buffer.from('let me in'));
  assert.equal(denied.received.length, 0, 'a denied client gets nothing');
  assert.equal(stack.serviceConnections(), 0, 'a denied client never reaches the service');
  assert.equal(stack.white.snapshot().grays[0]?.clientsRefused[HOOK_DENIED], 1);
  assert.equal(stack.white.snapshot().grays[0]?.clientsTotal, 0);

  // The question the hook was asked, signed like a webhook.
  assert.equal(oracle.hits.length, 1);
  const [ask] = oracle.hits;
  assert.ok(ask);
  assert.equal(ask.path, '/authorize');
  assert.equal(signatureProblem(ask, authSecret), null);
  const q = JSON.parse(ask.raw.toString('utf8')) as Record<string, unknown>;
  assert.equal(q.kind, 'client_connect');
  assert.equal(q.gray_id, 'g1');
  assert.equal(q.remote_address, `127.0.0.1:${denied.localPort}`);
  assert.equal(q.id, ask.headers['webhook-id']);
  assert.match(String(q.time), ISO_MS_UTC);
  assert.ok(Date.parse(String(q.time)) >= startedAt - 1_000);

  oracle.setAnswer(json({ allow: true }));
  const payload = randomBytes(2_000);
  const allowed = await exchange(stack.publicPort, payload);
  assert.ok(allowed.reply.equals(payload), 'an allowed client gets its echo');
  assert.equal(stack.serviceConnections(), 1);
  assert.equal(oracle.hits.length, 2);
  assert.equal(stack.white.snapshot().grays[0]?.clientsRefused[HOOK_DENIED], 1, 'no further denial');
  const m = parseMetrics(renderMetrics(stack.white.snapshot(), stack.white.dataPlane.name));
  assert.equal(m.get(`relay_client_refusals_total{gray="g1",reason="${HOOK_DENIED}"}`), 1);
  assert.equal(m.get(`relay_data_rejections_total{reason="${HOOK_DENIED}"}`), undefined, "a refused client is not a data-port rejection");
});

test('authorize client_connect: a hanging hook follows on_timeout (allow, then deny after a reload)', { timeout: 20_000 }, async (t) => {
  const defer = cleanup(t);
  const oracle = await Receiver.start(hang);
  defer(() => oracle.close());
  const stack = await startStack({ authorize: authorizeConfig(oracle.url('/authorize'), { timeoutMs: 150, onTimeout: 'allow' }) });
  defer(() => stack.stop());
  await grayReady(stack);

  const payload = Buffer.from('waited for a slow oracle');
  const allowed = await exchange(stack.publicPort, payload);
  assert.ok(allowed.reply.equals(payload), 'on_timeout: allow lets the client through');
  assert.equal(oracle.hits.length, 1, 'the hook was asked');
  assert.equal(stack.serviceConnections(), 1);
  assert.equal(stack.white.snapshot().grays[0]?.clientsRefused[HOOK_DENIED], undefined);

  await stack.reload({ ...stack.config, authorize: authorizeConfig(oracle.url('/authorize'), { timeoutMs: 150, onTimeout: 'deny' }) });
  const denied = await refused(stack.publicPort, Buffer.from('waiting again'));
  assert.equal(denied.received.length, 0);
  assert.equal(oracle.hits.length, 2, 'the reloaded hook was asked');
  assert.equal(stack.serviceConnections(), 1, 'on_timeout: deny keeps the client from the service');
  assert.equal(stack.white.snapshot().grays[0]?.clientsRefused[HOOK_DENIED], 1);
});

test('authorize client_connect switched on by a reload: the engine stops joining clients at accept, and the next client is asked', { timeout: 20_000 }, async (t) => {
  const defer = cleanup(t);
  const oracle = await Receiver.start(json({ allow: false, reason: 'nope' }));
  defer(() => oracle.close());
  const stack = await startStack();
  defer(() => stack.stop());
  await grayReady(stack);
  // Without a hook the engine joins clients at accept with the pool's idle connections: three of
  // the first four are still idle in it when the hook is switched on.
  const payload = Buffer.from('before the hook');
  assert.ok((await exchange(stack.publicPort, payload)).reply.equals(payload));
  assert.ok(stack.white.snapshot().grays[0]!.poolIdle >= 3, 'idle connections in the pool before the reload');

  await stack.reload({ ...stack.config, authorize: authorizeConfig(oracle.url('/authorize')) });
  const denied = await refused(stack.publicPort, Buffer.from('after the hook'));
  assert.equal(denied.received.length, 0);
  assert.equal(oracle.hits.length, 1, 'the hook was asked');
  assert.equal(stack.serviceConnections(), 1, 'the denied client never reached the service');
  assert.equal(stack.white.snapshot().grays[0]?.clientsRefused[HOOK_DENIED], 1);
});

test('authorize gray_login: a denied gray cannot log in, and logs in once allowed', { timeout: 20_000 }, async (t) => {
  const defer = cleanup(t);
  const startedAt = Date.now();
  const oracle = await Receiver.start(json({ allow: false, reason: 'nope' }));
  defer(() => oracle.close());
  const webhook = await Receiver.start();
  defer(() => webhook.close());
  const stack = await startStack({
    hooks: [hookConfig(webhook.url(), { events: ['gray.connected'] })],
    authorize: authorizeConfig(oracle.url('/authorize'), { grayLogin: true, clientConnect: false }),
  });
  defer(() => stack.stop());

  const agent = stack.gray();
  const why = await next(agent, 'disconnected');
  // What the engine sends: BYE with the hook's code, the reason in the text.
  assert.equal(why.code, HOOK_DENIED);
  assert.match(why.message, /login denied: nope/);
  assert.equal(stack.white.snapshot().grays[0]?.connected, false);
  assert.ok((stack.white.counters.controlRejections[HOOK_DENIED] ?? 0) >= 1);
  assert.equal(stack.white.counters.authFailures, 0, 'a denied login is not a failed authentication');

  const [ask] = oracle.hits;
  assert.ok(ask);
  const q = JSON.parse(ask.raw.toString('utf8')) as Record<string, unknown>;
  assert.equal(q.kind, 'gray_login');
  assert.equal(q.gray_id, 'g1');
  assert.equal(q.remote_address, '127.0.0.1');
  assert.ok(Date.parse(String(q.time)) >= startedAt - 1_000);
  assert.equal(q.connection_id, undefined);

  // The agent keeps retrying; once the hook allows, it logs in and its pool fills.
  oracle.setAnswer(json({ allow: true }));
  await next(agent, 'pool-ready');
  assert.equal(stack.white.snapshot().grays[0]?.connected, true);
  await webhook.waitFor(isEvent('gray.connected'), 'gray.connected after the hook allowed');
  const payload = Buffer.from('in at last');
  assert.ok((await exchange(stack.publicPort, payload)).reply.equals(payload));
});

test('authorize client_connect: the request carries the connection_id used in client.* events (docs/hooks.md)', { timeout: 20_000 }, async (t) => {
  const defer = cleanup(t);
  const oracle = await Receiver.start(json({ allow: true }));
  defer(() => oracle.close());
  const webhook = await Receiver.start();
  defer(() => webhook.close());
  const stack = await startStack({
    hooks: [hookConfig(webhook.url(), { events: ['client.connected'] })],
    authorize: authorizeConfig(oracle.url('/authorize')),
  });
  defer(() => stack.stop());
  await grayReady(stack);

  const payload = Buffer.from('which connection am I?');
  const { reply, localPort } = await exchange(stack.publicPort, payload);
  assert.ok(reply.equals(payload));
  const connected = await webhook.waitFor(isEvent('client.connected', (d) => d.clientAddress === `127.0.0.1:${localPort}`), 'client.connected');
  const connectionId = (body(connected).data as Record<string, unknown>).connectionId;
  const [ask] = oracle.hits;
  assert.ok(ask);
  const q = JSON.parse(ask.raw.toString('utf8')) as Record<string, unknown>;
  // docs/hooks.md: `connection_id` — "client_connect only: the id also used in client.* events".
  // The engine's Gate has no connection id to give (PoolBroker makes it in pair(), after the gate).
  assert.equal(q.connection_id, connectionId, 'authorize request has no connection_id matching client.connected');
});

test('authorize: limits.hook_response_max_bytes bounds the answer (an answer over it denies)', { timeout: 20_000 }, async (t) => {
  const defer = cleanup(t);
  const long = { allow: true, reason: 'x'.repeat(100) };
  const oracle = await Receiver.start(json(long));
  defer(() => oracle.close());
  const stack = await startStack({ limits: { hookResponseMaxBytes: 64 }, authorize: authorizeConfig(oracle.url('/authorize')) });
  defer(() => stack.stop());
  await grayReady(stack);

  // 129 bytes of "allow" against a 64-byte limit: fails closed.
  const denied = await refused(stack.publicPort, Buffer.from('too long an answer'));
  assert.equal(denied.received.length, 0);
  assert.equal(oracle.hits.length, 1);
  assert.equal(stack.serviceConnections(), 0);
  assert.equal(stack.white.snapshot().grays[0]?.clientsRefused[HOOK_DENIED], 1);

  // The same allow, short enough, lets the client in.
  oracle.setAnswer(json({ allow: true }));
  const payload = Buffer.from('short answer');
  assert.ok((await exchange(stack.publicPort, payload)).reply.equals(payload));
  assert.equal(stack.serviceConnections(), 1);
});

// ---------------------------------------------------------------------------------------------
// Metrics

test('metrics: a known transfer shows in the bytes and client counters', { timeout: 20_000 }, async (t) => {
  const defer = cleanup(t);
  // The service answers every upload with twice its bytes, so the two directions differ.
  const doubling: ServiceHandler = (socket) => {
    const chunks: Buffer[] = [];
    socket.on('error', () => socket.destroy());
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      const all = Buffer.concat(chunks);
      socket.end(Buffer.concat([all, all]));
    });
  };
  const webhook = await Receiver.start();
  defer(() => webhook.close());
  const stack = await startStack({ service: doubling, hooks: [hookConfig(webhook.url(), { events: ['client.disconnected'] })] });
  defer(() => stack.stop());
  await grayReady(stack);

  const sizes = [1, 1_000, 65_536, 300_001];
  for (const n of sizes) {
    const payload = randomBytes(n);
    const { reply } = await exchange(stack.publicPort, payload);
    assert.equal(reply.length, 2 * n);
    assert.ok(reply.subarray(0, n).equals(payload) && reply.subarray(n).equals(payload));
  }
  // Wait until every pair has closed (its client.disconnected went out), so the counters are final.
  await webhook.waitFor(() => webhook.events().length >= sizes.length, `${sizes.length} client.disconnected`);
  const sent = sizes.reduce((a, b) => a + b, 0);

  const snap = stack.white.snapshot();
  const m = parseMetrics(renderMetrics(snap, stack.white.dataPlane.name));
  assert.equal(m.get('relay_grays_connected'), 1);
  assert.equal(m.get('relay_gray_connected{gray="g1"}'), 1);
  assert.equal(m.get('relay_clients_total{gray="g1"}'), sizes.length);
  assert.equal(m.get('relay_clients_active{gray="g1"}'), 0);
  assert.equal(m.get('relay_clients_pending{gray="g1"}'), 0);
  assert.equal(m.get('relay_pool_target_connections{gray="g1"}'), 4);
  // Every event accepted is delivered or still settling (the last answer may be in transit).
  const hookUrl = webhook.url();
  assert.equal((m.get(`relay_hook_deliveries_total{url="${hookUrl}",result="delivered"}`) ?? NaN) + (m.get(`relay_hook_queued_events{url="${hookUrl}"}`) ?? NaN), sizes.length);
  assert.equal(m.get(`relay_hook_deliveries_total{url="${hookUrl}",result="failed"}`), 0);
  assert.equal(m.get(`relay_hook_dropped_events_total{url="${hookUrl}"}`), 0);
  assert.equal(m.get('relay_client_received_bytes_total{gray="g1"}'), sent, 'relay_client_received_bytes_total');
  // The client.disconnected events agree with the metrics.
  const events = webhook.events().map((e) => e.data as unknown as Record<string, number>);
  assert.equal(events.reduce((a, e) => a + (e.bytesFromClient ?? 0), 0), sent);
  // Checked last (see the top of the file: the engine adds each data connection's 60-byte preamble).
  assert.equal(m.get('relay_client_sent_bytes_total{gray="g1"}'), 2 * sent, 'relay_client_sent_bytes_total must be the bytes the clients received');
});

// ---------------------------------------------------------------------------------------------
// Reload

test('WhiteHooks.update on reload: an added hook starts receiving, a removed one stops', { timeout: 20_000 }, async (t) => {
  const defer = cleanup(t);
  const receiver = await Receiver.start();
  defer(() => receiver.close());
  const only = ['client.connected', 'client.disconnected'];
  const stack = await startStack({ hooks: [hookConfig(receiver.url('/a'), { events: only })] });
  defer(() => stack.stop());
  await grayReady(stack);

  const first = await exchange(stack.publicPort, Buffer.from('first'));
  const firstAddress = `127.0.0.1:${first.localPort}`;
  await receiver.waitFor(isEvent('client.disconnected', (d) => d.clientAddress === firstAddress, '/a'), 'first client on /a');
  assert.deepEqual(stack.hooks.stats().map((s) => s.url), [receiver.url('/a')]);

  // /a removed, /b added.
  await stack.reload({ ...stack.config, hooks: [hookConfig(receiver.url('/b'), { events: only })] });
  assert.deepEqual(stack.hooks.stats().map((s) => s.url), [receiver.url('/b')]);
  const second = await exchange(stack.publicPort, Buffer.from('second'));
  const secondAddress = `127.0.0.1:${second.localPort}`;
  await receiver.waitFor(isEvent('client.disconnected', (d) => d.clientAddress === secondAddress, '/b'), 'second client on /b');

  // Add /a back next to /b: both get the third client.
  await stack.reload({ ...stack.config, hooks: [hookConfig(receiver.url('/b'), { events: only }), hookConfig(receiver.url('/a'), { events: only })] });
  const third = await exchange(stack.publicPort, Buffer.from('third'));
  const thirdAddress = `127.0.0.1:${third.localPort}`;
  await receiver.waitFor(isEvent('client.disconnected', (d) => d.clientAddress === thirdAddress, '/a'), 'third client on /a');
  await receiver.waitFor(isEvent('client.disconnected', (d) => d.clientAddress === thirdAddress, '/b'), 'third client on /b');
  const m = parseMetrics(renderMetrics(stack.white.snapshot(), stack.white.dataPlane.name));
  // /b has taken 4 events (2 clients × 2): delivered, or the last one still settling.
  const b = receiver.url('/b');
  assert.equal((m.get(`relay_hook_deliveries_total{url="${b}",result="delivered"}`) ?? NaN) + (m.get(`relay_hook_queued_events{url="${b}"}`) ?? NaN), 4);
  assert.equal(m.has(`relay_hook_queued_events{url="${receiver.url('/a')}"}`), true, 're-added /a has its series again');

  // Everything the hooks hold is delivered by close(); only then is "never received" final.
  await stack.stop();
  const clientsOn = (path: string): string[] => receiver.events(path).map((e) => String((e.data as Record<string, unknown>).clientAddress));
  assert.deepEqual(clientsOn('/a'), [firstAddress, firstAddress, thirdAddress, thirdAddress], '/a: first client, then nothing until re-added');
  assert.deepEqual(clientsOn('/b'), [secondAddress, secondAddress, thirdAddress, thirdAddress], '/b: nothing before it was added');
});
