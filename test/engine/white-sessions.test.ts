// The gray's per-white session set: add and remove whites as their addresses come and go,
// keep each white's session (backoff, pool) independent of the others.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import type { GrayConfig } from '../../src/config/types.js';
import { GrayAgent, type WhiteSessionCounts, type WhiteSessionState, type WhiteTarget } from '../../src/engine/gray/agent.js';
import { pickFamily, WhiteSessions, type WhiteSession } from '../../src/engine/gray/white-sessions.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { silentLogger } from '../../src/log.js';
import { grayConfigFor, roundTrip, startService, whiteConfigFor } from '../helpers/tunnel.js';
import { testDataPlane } from '../helpers/data-plane.js';
import { waitUntil } from '../soak/support.js';

/** A session that only records what was asked of it. */
class FakeSession implements WhiteSession {
  started = false;
  stopped = false;
  connected = false;
  activeForwards = 0;
  counters: WhiteSessionCounts = { sessions: 0, reconnects: 0, forwardsTotal: 0, bytesToService: 0, bytesFromService: 0, serviceConnectFailures: 0 };
  constructor(readonly target: WhiteTarget) {}
  counts(): WhiteSessionCounts {
    return this.counters;
  }
  start(): void {
    this.started = true;
  }
  async stop(): Promise<void> {
    this.stopped = true;
  }
  state(): WhiteSessionState {
    const connected = this.connected;
    return { white: `${this.target.control.host}:${this.target.control.port}`, connected, connectedSince: connected ? 1 : null, poolIdle: connected ? 2 : 0, poolTarget: connected ? 4 : 0, activeForwards: this.activeForwards, reconnectAttempts: 0, lastError: null };
  }
}

function fakeSet(config: GrayConfig, answers: Map<string, string[] | Error>) {
  const made: FakeSession[] = [];
  const set = new WhiteSessions(config, silentLogger(), {
    dataPlane: testDataPlane(),
    resolve: async (host) => {
      const a = answers.get(host);
      if (a === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      if (a instanceof Error) throw a;
      return a;
    },
    createSession: (target) => {
      const s = new FakeSession(target);
      made.push(s);
      return s;
    },
  });
  return { set, made };
}

describe('white session set (resolution, add, remove)', () => {
  const base = grayConfigFor('g', randomBytes(32), 7000, 80);

  it('one session per address: literals as written, names per resolved address, duplicates once', async () => {
    const config: GrayConfig = { ...base, whites: [{ host: '10.0.0.9', port: 7000 }, { host: 'whites.test', port: 7000 }, { host: '10.0.0.1', port: 7000 }] };
    const { set, made } = fakeSet(config, new Map([['whites.test', ['10.0.0.1', '10.0.0.2']]]));
    await set.start();
    assert.deepEqual(set.state().map((s) => s.white), ['10.0.0.1:7000', '10.0.0.2:7000', '10.0.0.9:7000']);
    assert.equal(made.length, 3);
    assert.ok(made.every((s) => s.started && s.target.dataHost === null));
    await set.stop();
    assert.ok(made.every((s) => s.stopped));
  });

  it('re-resolving joins an added address and leaves a removed one; others are not touched', async () => {
    const answers = new Map<string, string[] | Error>([['whites.test', ['10.0.0.1', '10.0.0.2']]]);
    const { set, made } = fakeSet({ ...base, whites: [{ host: 'whites.test', port: 7000 }] }, answers);
    const joined: string[] = [];
    const left: string[] = [];
    set.on('joined', (k) => joined.push(k));
    set.on('left', (k) => left.push(k));
    await set.start();
    assert.deepEqual(joined, ['10.0.0.1:7000', '10.0.0.2:7000']);
    answers.set('whites.test', ['10.0.0.2', '10.0.0.3']);
    await set.refresh();
    assert.deepEqual(left, ['10.0.0.1:7000']);
    assert.deepEqual(joined, ['10.0.0.1:7000', '10.0.0.2:7000', '10.0.0.3:7000']);
    assert.deepEqual(set.state().map((s) => s.white), ['10.0.0.2:7000', '10.0.0.3:7000']);
    assert.equal(made[0]!.stopped, true);
    assert.equal(made[1]!.stopped, false, 'the session that stayed was not restarted');
    assert.equal(made.length, 3);
    await set.stop();
  });

  it('status(): one entry per white session, the forwards of all of them, counts of a white that left kept', async () => {
    const answers = new Map<string, string[] | Error>([['whites.test', ['10.0.0.1', '10.0.0.2']]]);
    const { set, made } = fakeSet({ ...base, whites: [{ host: 'whites.test', port: 7000 }] }, answers);
    await set.start();
    const [one, two] = made as [FakeSession, FakeSession];
    one.connected = true;
    one.activeForwards = 1;
    one.counters = { sessions: 1, reconnects: 2, forwardsTotal: 5, bytesToService: 100, bytesFromService: 1000, serviceConnectFailures: 1 };
    two.counters = { sessions: 0, reconnects: 3, forwardsTotal: 2, bytesToService: 10, bytesFromService: 20, serviceConnectFailures: 0 };
    const status = set.status();
    assert.equal(status.id, 'g');
    assert.deepEqual(status.whites, [
      { white: '10.0.0.1:7000', connected: true, sessions: 1, reconnects: 2, poolIdle: 2, poolTarget: 4 },
      { white: '10.0.0.2:7000', connected: false, sessions: 0, reconnects: 3, poolIdle: 0, poolTarget: 0 },
    ]);
    assert.deepEqual(
      { active: status.activeForwards, total: status.forwardsTotal, to: status.bytesToService, from: status.bytesFromService, failed: status.serviceConnectFailures },
      { active: 1, total: 7, to: 110, from: 1020, failed: 1 },
    );
    // 10.0.0.1 leaves: its entry goes, its forwards stay counted (counters never go back).
    answers.set('whites.test', ['10.0.0.2']);
    await set.refresh();
    const after = set.status();
    assert.deepEqual(after.whites.map((w) => w.white), ['10.0.0.2:7000']);
    assert.deepEqual({ total: after.forwardsTotal, to: after.bytesToService, from: after.bytesFromService, failed: after.serviceConnectFailures }, { total: 7, to: 110, from: 1020, failed: 1 });
    await set.stop();
  });

  it('a failed lookup keeps the sessions it had, and says so', async () => {
    const answers = new Map<string, string[] | Error>([['whites.test', ['10.0.0.1']]]);
    const { set } = fakeSet({ ...base, whites: [{ host: 'whites.test', port: 7000 }] }, answers);
    await set.start();
    answers.set('whites.test', Object.assign(new Error('queryA ESERVFAIL'), { code: 'ESERVFAIL' }));
    await set.refresh();
    assert.equal(set.size, 1);
    assert.deepEqual(set.resolveErrors(), [{ white: 'whites.test:7000', error: 'ESERVFAIL' }]);
    answers.set('whites.test', []);
    await set.refresh();
    assert.equal(set.size, 1, 'an empty answer is a failure too, not "remove every white"');
    answers.set('whites.test', ['10.0.0.1']);
    await set.refresh();
    assert.deepEqual(set.resolveErrors(), []);
    await set.stop();
  });

  it('data_host pins a single white: its name is dialed as written, not expanded', async () => {
    const { set, made } = fakeSet({ ...base, whites: [{ host: 'white.test', port: 7000 }], dataHost: 'data.test' }, new Map([['white.test', ['10.0.0.1', '10.0.0.2']]]));
    await set.start();
    assert.equal(made.length, 1);
    assert.deepEqual(made[0]!.target, { control: { host: 'white.test', port: 7000 }, dataHost: 'data.test' });
    await set.stop();
  });

  it('a dual-stack name is one white: its IPv4 addresses, or its IPv6 ones when it has no IPv4', () => {
    assert.deepEqual(pickFamily(['10.0.0.1', '2001:db8::1', '10.0.0.2', '10.0.0.1']), ['10.0.0.1', '10.0.0.2']);
    assert.deepEqual(pickFamily(['::1', '127.0.0.1']), ['127.0.0.1']);
    assert.deepEqual(pickFamily(['2001:db8::1', '2001:db8::2']), ['2001:db8::1', '2001:db8::2']);
    assert.deepEqual(pickFamily([]), []);
  });

  it('the next re-resolve runs on the period by itself', async () => {
    const answers = new Map<string, string[] | Error>([['whites.test', ['10.0.0.1', '10.0.0.2']]]);
    const { set } = fakeSet({ ...base, resolveIntervalMs: 1000, whites: [{ host: 'whites.test', port: 7000 }] }, answers);
    await set.start();
    answers.set('whites.test', ['10.0.0.2']);
    const [gone] = await once(set, 'left');
    assert.equal(gone, '10.0.0.1:7000');
    assert.equal(set.size, 1);
    await set.stop();
  });
});

/** A white on `host` with gray g1 registered. */
async function startWhite(host: string, secret: Buffer, controlPort = 0): Promise<WhiteServer> {
  const white = new WhiteServer(whiteConfigFor([{ id: 'g1', secret, publicPort: 0, dataPort: 0 }], {}, { control: { host, port: controlPort }, bind: host }), { dataPlane: testDataPlane(), logger: silentLogger() });
  await white.start();
  return white;
}

/** Waits for the white to see an idle pooled connection, then sends `text` through it. */
async function roundTripWhenReady(white: WhiteServer, text: string): Promise<Buffer> {
  await waitUntil(() => (white.grayReadiness('g1')?.poolIdle ?? 0) >= 1, 'the gray fills its pool on this white', 10_000);
  return roundTrip(white.portsOf('g1')!.publicPort, Buffer.from(text));
}

/** A WhiteSessions of real GrayAgents, with the agents reachable by address for their events. */
function agentSet(config: GrayConfig, resolve?: (host: string) => Promise<string[]>) {
  const agents = new Map<string, GrayAgent>();
  const set = new WhiteSessions(config, silentLogger(), {
    dataPlane: testDataPlane(),
    ...(resolve ? { resolve } : {}),
    createSession: (white, logger) => {
      const agent = new GrayAgent(config, logger, { white, dataPlane: testDataPlane() });
      agents.set(agent.where, agent);
      return agent;
    },
  });
  return { set, agents };
}

function poolReady(agent: GrayAgent | undefined): Promise<unknown> {
  assert.ok(agent, 'the session exists');
  return once(agent, 'pool-ready');
}

describe('white session set with real whites', () => {
  it('a white that refuses or never answers costs a live white nothing (backoff per white)', async () => {
    const secret = randomBytes(32);
    const service = await startService();
    const live = await startWhite('127.0.0.1', secret);
    // Refusing: a port that was just free. Silent: accepts TCP, never speaks TLS.
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const refusingPort = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const held: net.Socket[] = [];
    const silent = net.createServer((s) => held.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const silentPort = (silent.address() as AddressInfo).port;
    const config: GrayConfig = {
      ...grayConfigFor('g1', secret, live.controlPort, service.port, { pool: 3 }, { reconnectBaseMs: 20, reconnectMaxMs: 200, handshakeTimeoutMs: 60_000 }),
      whites: [{ host: '127.0.0.1', port: refusingPort }, { host: '127.0.0.1', port: silentPort }, { host: '127.0.0.1', port: live.controlPort }],
    };
    const { set, agents } = agentSet(config);
    try {
      const liveKey = `127.0.0.1:${live.controlPort}`;
      const refusingKey = `127.0.0.1:${refusingPort}`;
      await set.start();
      // Three failed attempts: the refusing white is retried on its own schedule.
      const refusingRetried = new Promise<void>((resolve) => agents.get(refusingKey)!.on('reconnecting', ({ attempt }) => attempt >= 3 && resolve()));
      await poolReady(agents.get(liveKey));
      const reply = await roundTrip(live.portsOf('g1')!.publicPort, Buffer.from('through the live white'));
      assert.equal(reply.toString(), 'through the live white');
      await refusingRetried;
      // The client's pooled connection is replaced, and a credit the white granted meanwhile
      // brings one more that it closes as surplus on arrival: the gray hears of each with its
      // held bookkeeping, after the reply, so its count passes through 2 or 4 on the way to 3.
      await waitUntil(() => set.state().find((s) => s.white === liveKey)?.poolIdle === 3, 'the live white\'s pool is full again', 10_000);
      const rows = new Map(set.state().map((s) => [s.white, s]));
      const l = rows.get(liveKey)!;
      assert.equal(l.connected, true);
      assert.equal(l.reconnectAttempts, 0);
      assert.equal(l.lastError, null);
      const r = rows.get(refusingKey)!;
      assert.equal(r.connected, false);
      assert.ok(r.reconnectAttempts >= 3);
      assert.equal(r.lastError?.code, 'ECONNREFUSED');
      const s = rows.get(`127.0.0.1:${silentPort}`)!;
      assert.equal(s.connected, false);
      assert.equal(s.reconnectAttempts, 0, 'still waiting on its first handshake, which holds no one else up');
    } finally {
      await set.stop(100);
      for (const s of held) s.destroy();
      silent.close();
      await live.stop(100);
      service.server.close();
    }
  });

  it('a killed white is retried alone while the other keeps serving; restarted, it is rejoined', async () => {
    const secret = randomBytes(32);
    const service = await startService();
    const a = await startWhite('127.0.0.1', secret);
    let b = await startWhite('127.0.0.2', secret, a.controlPort);
    const config: GrayConfig = { ...grayConfigFor('g1', secret, a.controlPort, service.port, { pool: 2 }), whites: [{ host: '127.0.0.1', port: a.controlPort }, { host: '127.0.0.2', port: a.controlPort }] };
    const { set, agents } = agentSet(config);
    const keyB = `127.0.0.2:${a.controlPort}`;
    try {
      await set.start();
      await Promise.all([...agents.values()].map((g) => (g.state().poolIdle >= 2 ? Promise.resolve() : once(g, 'pool-ready'))));
      const agentB = agents.get(keyB)!;
      const down = once(agentB, 'disconnected');
      await b.stop(0);
      await down;
      assert.equal((await roundTrip(a.portsOf('g1')!.publicPort, Buffer.from('still here'))).toString(), 'still here');
      const rowA = set.state().find((s) => s.white.startsWith('127.0.0.1'))!;
      assert.equal(rowA.connected, true);
      assert.equal(rowA.reconnectAttempts, 0);
      const back = once(agentB, 'pool-ready');
      b = await startWhite('127.0.0.2', secret, a.controlPort);
      await back;
      assert.equal((await roundTrip(b.portsOf('g1')!.publicPort, Buffer.from('rejoined'), '127.0.0.2')).toString(), 'rejoined');
    } finally {
      await set.stop(100);
      await a.stop(100);
      await b.stop(100);
      service.server.close();
    }
  });

  it('the system resolver: "localhost" is dialed at its IPv4 address', async () => {
    const secret = randomBytes(32);
    const service = await startService();
    const white = await startWhite('127.0.0.1', secret);
    const config: GrayConfig = { ...grayConfigFor('g1', secret, white.controlPort, service.port, { pool: 1 }), whites: [{ host: 'localhost', port: white.controlPort }] };
    const set = new WhiteSessions(config, silentLogger(), { dataPlane: testDataPlane() });
    try {
      await set.start();
      assert.deepEqual(set.state().map((s) => s.white), [`127.0.0.1:${white.controlPort}`]);
      assert.equal((await roundTripWhenReady(white, 'localhost')).toString(), 'localhost');
    } finally {
      await set.stop(100);
      await white.stop(100);
      service.server.close();
    }
  });

  it('DNS: a name resolving to two addresses gives two sessions; removing one leaves one after the next re-resolve', async () => {
    const secret = randomBytes(32);
    const service = await startService();
    const w1 = await startWhite('127.0.0.1', secret);
    const w2 = await startWhite('127.0.0.2', secret, w1.controlPort);
    let addresses = ['127.0.0.1', '127.0.0.2'];
    const lookups: string[] = [];
    const config: GrayConfig = {
      ...grayConfigFor('g1', secret, w1.controlPort, service.port, { pool: 2, resolveIntervalMs: 1000 }),
      whites: [{ host: 'whites.relay.test', port: w1.controlPort }],
    };
    const { set, agents } = agentSet(config, async (host) => {
      lookups.push(host);
      return addresses;
    });
    try {
      await set.start();
      assert.equal(set.size, 2);
      await Promise.all([...agents.values()].map((g) => (g.state().poolIdle >= 2 ? Promise.resolve() : once(g, 'pool-ready'))));
      for (const [w, host] of [[w1, '127.0.0.1'], [w2, '127.0.0.2']] as const) {
        assert.equal(w.snapshot().grays[0]!.connected, true);
        assert.equal((await roundTrip(w.portsOf('g1')!.publicPort, Buffer.from(host), host)).toString(), host);
      }
      addresses = ['127.0.0.1'];
      const gone = once(agents.get(`127.0.0.2:${w1.controlPort}`)!, 'disconnected');
      const [left] = await once(set, 'left');
      assert.equal(left, `127.0.0.2:${w1.controlPort}`);
      await gone;
      assert.equal(set.size, 1);
      assert.deepEqual(set.state().map((s) => s.white), [`127.0.0.1:${w1.controlPort}`]);
      // Resolved at start and again for the change (a slow run may re-resolve once more since).
      assert.ok(lookups.length >= 2 && lookups.every((h) => h === 'whites.relay.test'), lookups.join());
      assert.equal(w1.snapshot().grays[0]!.connected, true);
    } finally {
      await set.stop(100);
      await w1.stop(100);
      await w2.stop(100);
      service.server.close();
    }
  });
});
