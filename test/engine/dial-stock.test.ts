// An engine's stock of preambles (substrate/dial-stock.ts, native/stock.cc), with a fake white
// on 127.0.0.1 that reads each connection's preamble: the engine dials one connection per
// credit while it has preambles, in their order; a start header is a credit it answers with a
// successor by itself; an empty stock waits for JavaScript; a failed dial holds the stock until
// release; a closed stock's preambles are never used after, and its connections go with it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net, { type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DialStock, type StockHandlers } from '../../src/engine/substrate/dial-stock.js';
import { DialedConn, type Endpoint } from '../../src/engine/substrate/dialed-conn.js';
import type { PairEnd } from '../../src/engine/substrate/pair.js';
import { encodeStartHeader } from '../../src/engine/protocol/start-header.js';
import { startService } from '../helpers/tunnel.js';
import { noEngine, testEngine } from '../helpers/data-plane.js';

const PREAMBLE = 60;
const PREFIX = 40;

/** A white's data port that hands out each connection with the preamble it read. */
class FakeWhite {
  private server!: net.Server;
  port = 0;
  private readonly ready: Array<{ socket: Socket; preamble: Buffer }> = [];
  private readonly waiters: Array<(c: { socket: Socket; preamble: Buffer }) => void> = [];

  async start(): Promise<void> {
    this.server = net.createServer((socket) => {
      socket.on('error', () => {});
      let got = Buffer.alloc(0);
      const onData = (chunk: Buffer): void => {
        got = Buffer.concat([got, chunk]);
        if (got.length < PREAMBLE) return;
        socket.off('data', onData);
        const c = { socket, preamble: got.subarray(0, PREAMBLE) };
        const waiter = this.waiters.shift();
        if (waiter) waiter(c);
        else this.ready.push(c);
      };
      socket.on('data', onData);
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  next(): Promise<{ socket: Socket; preamble: Buffer }> {
    const c = this.ready.shift();
    return c ? Promise.resolve(c) : new Promise((r) => this.waiters.push(r));
  }

  get waiting(): number {
    return this.ready.length;
  }

  close(): void {
    this.server.close();
  }
}

/** A stock whose connections are adopted as they connect; their headers and failures are kept. */
interface Ended {
  pair: number;
  end: PairEnd;
  reachedService: boolean;
  header: Buffer | null;
}

/** Service table ids for this file's stocks (any id above 0 the engine has not seen). */
let nextTable = 1000;

function openStock(port: number, service?: Endpoint): { stock: DialStock; conns: DialedConn[]; headers: Array<Promise<Buffer>>; forwarded: Array<Promise<number>>; ends: Array<Promise<Ended>>; failures: Error[]; connected: () => Promise<DialedConn>; failed: () => Promise<Error> } {
  const engine = testEngine()!;
  const conns: DialedConn[] = [];
  const headers: Array<Promise<Buffer>> = [];
  const forwarded: Array<Promise<number>> = [];
  const ends: Array<Promise<Ended>> = [];
  const endWaiters = new Map<number, (e: Ended) => void>();
  const failures: Error[] = [];
  const connectWaiters: Array<(c: DialedConn) => void> = [];
  const failWaiters: Array<(e: Error) => void> = [];
  const pendingConns: DialedConn[] = [];
  const handlers: StockHandlers = {
    onConnected: (id) => {
      let onPrefix!: (b: Buffer) => void;
      headers.push(new Promise((r) => (onPrefix = r)));
      let onForwarded!: (pair: number) => void;
      forwarded.push(new Promise((r) => (onForwarded = r)));
      const conn = DialedConn.adopt(engine, id, {
        onConnected: () => {},
        onFailed: () => {},
        onPrefix: (b) => onPrefix(b),
        onClosed: () => {},
        onForwarded: (b, pair) => {
          ends.push(new Promise((r) => endWaiters.set(pair, r)));
          onPrefix(b);
          onForwarded(pair);
        },
      });
      conns.push(conn);
      const w = connectWaiters.shift();
      if (w) w(conn);
      else pendingConns.push(conn);
    },
    onFailed: (error) => {
      failures.push(error);
      failWaiters.shift()?.(error);
    },
    onPairEnd: (pair, end, reachedService, header) => endWaiters.get(pair)?.({ pair, end, reachedService, header }),
  };
  // A service table of one position (index 0) routing to service.
  let routes: number | undefined;
  if (service) {
    routes = nextTable++;
    engine.handle.setRoutes(routes, [[service.ip, service.port, service.keepAliveSec]]);
  }
  const stock = new DialStock(engine, { ip: '127.0.0.1', port, keepAliveSec: 0 }, PREAMBLE, PREFIX, handlers, routes);
  return {
    stock,
    conns,
    headers,
    forwarded,
    ends,
    failures,
    connected: () => {
      const c = pendingConns.shift();
      return c ? Promise.resolve(c) : new Promise((r) => connectWaiters.push(r));
    },
    failed: () => new Promise((r) => failWaiters.push(r)),
  };
}

const preambles = (n: number): Buffer[] => Array.from({ length: n }, () => randomBytes(PREAMBLE));
const key = (b: Buffer): string => b.toString('hex');

describe('an engine\'s stock of preambles', { skip: noEngine() }, () => {
  const white = new FakeWhite();
  before(() => white.start());
  after(() => white.close());

  it('dials one connection per credit, with the preambles in their order, and no more', async () => {
    const engine = testEngine()!;
    const base = engine.stats().conns;
    const s = openStock(white.port);
    const [p1, p2, p3] = preambles(3);
    s.stock.add([p1!, p2!, p3!], 2);
    const got = [await white.next(), await white.next()];
    assert.deepEqual(new Set(got.map((c) => key(c.preamble))), new Set([key(p1!), key(p2!)]));
    await s.connected();
    await s.connected();
    // The engine dials every credited preamble in the turn it gets them: a third would be held too.
    assert.equal(engine.stats().conns, base + 2);
    // A header on one of them is a credit the engine answers with p3, with no JavaScript call.
    const first = got[0]!;
    first.socket.write(randomBytes(PREFIX));
    const third = await white.next();
    assert.deepEqual(third.preamble, p3);
    s.stock.close();
    for (const c of [...got, third]) c.socket.destroy();
  });

  it('an empty stock waits for JavaScript: a header\'s credit is spent when preambles come', async () => {
    const engine = testEngine()!;
    const s = openStock(white.port);
    const [p1, p2] = preambles(2);
    s.stock.add([p1!], 1);
    const one = await white.next();
    assert.deepEqual(one.preamble, p1);
    await s.connected();
    const held = engine.stats().conns;
    one.socket.write(randomBytes(PREFIX));
    await s.headers[0];
    // The credit came with the header, in the same engine turn that would have dialed: nothing did.
    assert.equal(engine.stats().conns, held, 'a connection was dialed from an empty stock');
    assert.equal(white.waiting, 0);
    // Topped up, without a credit: the header's credit is spent on it at once.
    s.stock.add([p2!], 0);
    const two = await white.next();
    assert.deepEqual(two.preamble, p2);
    await s.connected();
    s.stock.close();
    one.socket.destroy();
    two.socket.destroy();
  });

  it('a stock topped up ahead of its credits dials only when credited, in order', async () => {
    const s = openStock(white.port);
    const all = preambles(4);
    s.stock.add(all.slice(0, 2), 0);
    s.stock.add(all.slice(2), 0);
    s.stock.add([], 3);
    const got = [await white.next(), await white.next(), await white.next()];
    assert.deepEqual(new Set(got.map((c) => key(c.preamble))), new Set(all.slice(0, 3).map(key)));
    for (let i = 0; i < 3; i++) await s.connected();
    s.stock.add([], 1);
    assert.deepEqual((await white.next()).preamble, all[3]);
    await s.connected();
    s.stock.close();
    for (const c of got) c.socket.destroy();
  });

  it('a session change: the old stock\'s preambles are never used after it is closed, and its idle connections close', async () => {
    const old = openStock(white.port);
    const [a1, a2, a3] = preambles(3);
    old.stock.add([a1!, a2!, a3!], 1);
    const idle = await white.next();
    assert.deepEqual(idle.preamble, a1);
    await old.connected();
    const closed = new Promise<void>((r) => idle.socket.once('close', () => r()));
    old.stock.close();
    idle.socket.resume();
    await closed;
    // The new session's stock, credited: only its own preamble arrives, never a2 or a3.
    const fresh = openStock(white.port);
    const [b1] = preambles(1);
    fresh.stock.add([b1!], 2);
    const next = await white.next();
    assert.deepEqual(next.preamble, b1);
    await fresh.connected();
    next.socket.write(randomBytes(PREFIX));
    await fresh.headers[0];
    assert.equal(white.waiting, 0);
    assert.equal(old.conns.length, 1);
    fresh.stock.close();
    next.socket.destroy();
  });

  it('a failed dial holds the stock until release, and its preamble is used again', async () => {
    // A port nobody listens on: every dial is refused before its preamble is sent.
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((r) => server.close(() => r()));
    const s = openStock(port);
    s.stock.add(preambles(1), 1);
    const error = await s.failed();
    assert.equal((error as NodeJS.ErrnoException).code, 'ECONNREFUSED');
    // Held: another credit dials nothing. A dial of its own, posted after the credit and refused
    // alike, marks when the engine has taken the credit.
    s.stock.add([], 1);
    const marker = new Promise<Error>((onFailed) => DialedConn.dial(testEngine()!, { ip: '127.0.0.1', port, keepAliveSec: 0 }, randomBytes(PREAMBLE), PREFIX, { onConnected: () => {}, onFailed, onPrefix: () => {}, onClosed: () => {} }));
    await marker;
    assert.equal(s.failures.length, 1, 'a held stock dialed');
    // Released, the returned preamble and the credits are dialed again (and refused again).
    s.stock.release();
    await s.failed();
    assert.ok(s.failures.length >= 2);
    s.stock.close();
  });

  it('a pair the engine forwarded from the stock is the stock\'s: its end comes with its counts, and a header when the service never answered', async () => {
    const service = await startService();
    const s = openStock(white.port, { ip: '127.0.0.1', port: service.port, keepAliveSec: 0 });
    s.stock.add(preambles(2), 1);
    const one = await white.next();
    await s.connected();
    const header = encodeStartHeader({ family: 4, srcAddress: '192.0.2.7', srcPort: 40007, dstAddress: '198.51.100.1', dstPort: 443 }, 0);
    one.socket.write(Buffer.concat([header, Buffer.from('hello')]));
    const pair = await s.forwarded[0]!;
    assert.ok(pair > 0);
    let echoed = '';
    const echoedAll = new Promise<void>((r) => one.socket.on('data', (d: Buffer) => {
      echoed += d.toString();
      if (echoed.length >= 5) r();
    }));
    // The successor was dialed with no JavaScript call in between.
    const two = await white.next();
    await s.connected();
    await echoedAll;
    // The session ends: the stock closes (its idle connection with it), the live pair goes on.
    const twoClosed = new Promise<void>((r) => two.socket.once('close', () => r()));
    two.socket.resume();
    s.stock.close();
    await twoClosed;
    one.socket.end();
    const ended = await s.ends[0]!;
    assert.equal(echoed, 'hello');
    assert.deepEqual({ pair: ended.pair, fromA: ended.end.bytesFromA, fromB: ended.end.bytesFromB, reached: ended.reachedService, header: ended.header, error: ended.end.error }, { pair, fromA: 5, fromB: 5, reached: true, header: null, error: null });
    service.server.close();
  });

  it('a forwarded pair whose service refused ends flagged, with its start header', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port: refusing } = server.address() as AddressInfo;
    await new Promise<void>((r) => server.close(() => r()));
    const s = openStock(white.port, { ip: '127.0.0.1', port: refusing, keepAliveSec: 0 });
    s.stock.add(preambles(1), 1);
    const one = await white.next();
    await s.connected();
    const header = encodeStartHeader({ family: 4, srcAddress: '192.0.2.8', srcPort: 40008, dstAddress: '198.51.100.1', dstPort: 443 }, 0);
    one.socket.on('error', () => {});
    one.socket.write(header);
    await s.forwarded[0];
    const ended = await s.ends[0]!;
    assert.equal(ended.reachedService, false);
    assert.equal((ended.end.error as NodeJS.ErrnoException | null)?.code, 'ECONNREFUSED');
    assert.deepEqual(ended.header, header);
    s.stock.close();
    one.socket.destroy();
  });
});
