// Strangers on a gray's data port and floods on its public port, while a legitimate client
// streams through the tunnel: the unverified cap holds, strangers get nothing, the legitimate
// pool keeps being replenished, idle clients cost a bounded amount each, and clients that vanish
// while queued do not hold the queue.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ErrorCodes } from '../../src/errors.js';
import { GrayAgent } from '../../src/engine/gray/agent.js';
import { MessageType } from '../../src/engine/protocol/messages.js';
import { START_HEADER_BYTES } from '../../src/engine/protocol/start-header.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { grayConfigFor, roundTrip, startService, whiteConfigFor } from '../helpers/tunnel.js';
import { testDataPlane } from '../helpers/data-plane.js';
import { captureLogger, closeTime, LiveTransfer, loginRaw, MiB, mib, retainedBytes, tcpConnect, waitUntil, within } from '../soak/support.js';

const LEGIT = 'legit';
const SECRET = randomBytes(32);
const LIMITS = { unverifiedDataPerPort: 16, preambleTimeoutMs: 1500 };

let white: WhiteServer;
let gray: GrayAgent;
let publicPort: number;
let dataPort: number;
let closeService: () => void;

const dataCount = (code: string): number => white.snapshot().counters.dataRejections[code] ?? 0;
const legit = (): ReturnType<WhiteServer['snapshot']>['grays'][number] => white.snapshot().grays.find((g) => g.id === LEGIT)!;

before(async () => {
  const service = await startService();
  closeService = () => service.server.close();
  white = new WhiteServer(whiteConfigFor([{ id: LEGIT, secret: SECRET, publicPort: 0, dataPort: 0 }], LIMITS), { dataPlane: testDataPlane(), logger: captureLogger().logger });
  await white.start();
  gray = new GrayAgent(grayConfigFor(LEGIT, SECRET, white.controlPort, service.port, { pool: 4 }), captureLogger().logger, { dataPlane: testDataPlane() });
  const ready = new Promise((r) => gray.once('pool-ready', r));
  gray.start();
  await within(ready, 10_000, 'the legitimate gray');
  ({ publicPort, dataPort } = white.portsOf(LEGIT)!);
});

after(async () => {
  await gray.stop(50);
  await white.stop(50);
  closeService();
});

/** Opens `total` silent connections to `port` from `ip`, `concurrency` at a time; each counts
 *  as done when the white closes it. Returns the bytes the strangers received (must be 0). */
async function silentFlood(port: number, ip: string, total: number, concurrency: number, stop: () => boolean = () => false, pauseMs = 0): Promise<{ opened: number; received: number }> {
  let opened = 0;
  let received = 0;
  const worker = async (): Promise<void> => {
    while (opened < total && !stop()) {
      opened += 1;
      const socket: net.Socket = await tcpConnect(port, ip);
      socket.on('data', (c: Buffer) => (received += c.length));
      await closeTime(socket);
      if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { opened, received };
}

describe('data port floods', () => {
  it("1,000 silent connections from the gray's own address: bounded by the unverified cap, all closed, the pool untouched", async (t) => {
    const live = await LiveTransfer.start(publicPort);
    await live.progressed();
    const before = { refused: dataCount(ErrorCodes.TOO_MANY_UNAUTHENTICATED), timedOut: dataCount(ErrorCodes.PREAMBLE_TIMEOUT) };
    const baseline = retainedBytes();
    const poolBefore = legit().poolIdle;
    const started = Date.now();
    const flood = await silentFlood(dataPort, '127.0.0.1', 1000, 100);
    const elapsed = Date.now() - started;
    const refused = dataCount(ErrorCodes.TOO_MANY_UNAUTHENTICATED) - before.refused;
    const timedOut = dataCount(ErrorCodes.PREAMBLE_TIMEOUT) - before.timedOut;
    t.diagnostic(`1000 connections in ${elapsed} ms: ${refused} refused at once, ${timedOut} closed at the preamble deadline`);
    assert.equal(flood.received, 0, 'strangers receive nothing');
    assert.equal(refused + timedOut, 1000, 'every one was closed and counted');
    // At most `cap` can be unverified at once, each for the preamble deadline.
    const rounds = Math.ceil(elapsed / LIMITS.preambleTimeoutMs) + 1;
    assert.ok(timedOut <= LIMITS.unverifiedDataPerPort * rounds, `${timedOut} held a slot in ${elapsed} ms; cap ${LIMITS.unverifiedDataPerPort}`);
    assert.equal(legit().poolIdle, poolBefore, 'the idle pool was not touched');
    const grown = retainedBytes() - baseline;
    assert.ok(grown < 16 * MiB, `retained memory grew by ${mib(grown)}`);
    await live.progressed();
    const result = await live.finish();
    assert.ok(result.intact, 'the legitimate transfer is intact');
  });

  it('a stranger flooding the data port from another address cannot starve the pool of replacements', async () => {
    const live = await LiveTransfer.start(publicPort);
    await live.progressed();
    let done = false;
    const before = dataCount(ErrorCodes.PREAMBLE_WRONG_SOURCE) + dataCount(ErrorCodes.TOO_MANY_UNAUTHENTICATED) + dataCount(ErrorCodes.PREAMBLE_TIMEOUT);
    // 64 strangers keep reconnecting (at most 1,000 connections, at most until this test is done).
    const flood = silentFlood(dataPort, '127.0.0.2', 1000, 64, () => done, 100);
    try {
      await waitUntil(() => dataCount(ErrorCodes.PREAMBLE_WRONG_SOURCE) + dataCount(ErrorCodes.TOO_MANY_UNAUTHENTICATED) + dataCount(ErrorCodes.PREAMBLE_TIMEOUT) - before >= 64, 'the flood to be under way');
      // Twelve clients use up the pool of four three times over: each needs a fresh connection.
      for (let i = 0; i < 12; i++) {
        const payload = randomBytes(1024);
        const echoed = await within(roundTrip(publicPort, payload), 5000, `client ${i} during the flood`);
        assert.ok(echoed.equals(payload));
      }
      // Full again: at the target, or with reused data connections (both ends with the engine)
      // at least the refill level, having dialed nothing for these clients.
      await waitUntil(() => legit().poolIdle >= legit().poolRefill, 'the pool to be full again during the flood', 3000);
      assert.ok(legit().poolRefill === (legit().dataConnectionsReused > 0 ? 2 : 4), `refill level ${legit().poolRefill}`);
    } finally {
      done = true;
      const result = await flood;
      assert.equal(result.received, 0, 'strangers receive nothing');
    }
    const transfer = await live.finish();
    assert.ok(transfer.intact, 'the legitimate transfer is intact');
  });
});

describe('lost credits', () => {
  it('credits whose connections never arrive expire, and a client queued behind them gets a new grant', async () => {
    // A gray's dials can be lost after the white counted them in flight (refused by a full
    // unverified cap during a flood, reset by a middlebox). architecture.md: "a credit whose
    // connection never arrives stops counting as in flight after a TTL, so a lost dial cannot
    // stall the pool". Here the TTL is preamble*2 + heartbeat = 400 ms; the client waits 3 s.
    const secret = randomBytes(32);
    const w = new WhiteServer(
      whiteConfigFor([{ id: 'raw', secret, publicPort: 0, dataPort: 0 }], { preambleTimeoutMs: 100, heartbeatIntervalMs: 200, heartbeatMissed: 10, clientWaitMs: 3000 }),
      { dataPlane: testDataPlane(), logger: captureLogger().logger },
    );
    await w.start();
    try {
      const s = await loginRaw(w.controlPort, 'raw', secret, 1);
      const alive = setInterval(() => s.probe.send({ type: MessageType.PING, t: 1 }), 100); // any frame is life
      try {
        const client = await tcpConnect(w.portsOf('raw')!.publicPort);
        const first = await s.probe.next((m) => m.type === MessageType.GRANT); // the credit asked for the client: lost too
        const firstUpTo = first.type === MessageType.GRANT ? first.upTo : 0;
        const again = await s.probe
          .next((m) => m.type === MessageType.GRANT && m.upTo > firstUpTo, 2000)
          .catch(() => null);
        assert.ok(again, 'no new credit within 2 s of the lost ones expiring: the queued client can only time out');
        client.destroy();
      } finally {
        clearInterval(alive);
        s.probe.destroy();
      }
    } finally {
      await w.stop(50);
    }
  });
});

describe('public port floods', () => {
  it('2,000 clients that connect and send nothing: all served, memory per connection reported, all cleaned up', async (t) => {
    const live = await LiveTransfer.start(publicPort);
    await live.progressed();
    const baseline = retainedBytes();
    const clients: net.Socket[] = [];
    const started = Date.now();
    for (let batch = 0; batch < 8; batch++) {
      clients.push(...(await Promise.all(Array.from({ length: 250 }, () => tcpConnect(publicPort)))));
      await waitUntil(() => legit().activeClients === clients.length + 1, `${clients.length} idle clients paired`, 15_000);
    }
    const perConnection = (retainedBytes() - baseline) / clients.length;
    t.diagnostic(
      `2000 idle clients paired in ${Date.now() - started} ms; heap+external per connection ${(perConnection / 1024).toFixed(1)} KiB ` +
        '(client socket, white client+data sockets, gray data+service sockets and the service socket, all in this process)',
    );
    assert.ok(perConnection < 256 * 1024, `${(perConnection / 1024).toFixed(1)} KiB per idle connection`);
    await live.progressed();
    for (const c of clients) c.destroy();
    await waitUntil(() => legit().activeClients === 1, 'the idle clients to be cleaned up', 15_000);
    await waitUntil(() => legit().poolIdle >= 4, 'the pool to be full again', 5000);
    const result = await live.finish();
    assert.ok(result.intact, 'the legitimate transfer is intact');
  });

  it('clients that vanish while queued leave the queue at once; a queued client that half-closes still gets its request through', async () => {
    const secret = randomBytes(32);
    const w = new WhiteServer(whiteConfigFor([{ id: 'raw', secret, publicPort: 0, dataPort: 0 }], { pendingClientsPerGray: 4, clientWaitMs: 10_000 }), { dataPlane: testDataPlane(), logger: captureLogger().logger });
    await w.start();
    try {
      const s = await loginRaw(w.controlPort, 'raw', secret, 1); // holds its credit: clients must queue
      const port = w.portsOf('raw')!.publicPort;
      const pending = (): number => w.snapshot().grays[0]!.pendingClients;
      // More vanishing clients than the queue holds: each must leave it, or the last would be refused.
      for (let i = 0; i < 6; i++) {
        const c = await tcpConnect(port);
        await waitUntil(() => pending() === 1, `client ${i} to be queued`);
        c.resetAndDestroy(); // gone: a reset, like a port scanner or an impatient user
        await waitUntil(() => pending() === 0, `vanished client ${i} to leave the queue`, 2000);
      }
      const real = await tcpConnect(port);
      await waitUntil(() => pending() === 1, 'a real client to be queued, not refused');
      real.end('hello'); // its whole request, then FIN, while still queued
      const conn = await tcpConnect(s.welcome.dataPort);
      const got: Buffer[] = [];
      const ended = new Promise<void>((resolve) => conn.once('end', resolve));
      conn.on('data', (b: Buffer) => got.push(b));
      conn.write(s.preamble(1));
      await within(ended, 3000, 'the request and its FIN on the pooled connection');
      const bytes = Buffer.concat(got);
      assert.equal(bytes.length, START_HEADER_BYTES + 5, 'the start header, then exactly the request');
      assert.equal(bytes.subarray(START_HEADER_BYTES).toString(), 'hello');
      real.destroy();
      conn.destroy();
      s.probe.destroy();
    } finally {
      await w.stop(50);
    }
  });
});
