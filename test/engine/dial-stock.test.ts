// An engine's stock (substrate/dial-stock.ts, native/stock.cc), with a fake white on 127.0.0.1
// that reads each connection's preamble: the engine dials one connection per credit while it
// has counters, in their order, each with its counter's preamble signed with the session's data
// key exactly as the protocol's encoder signs it; a start header is a credit it answers with a
// successor by itself; a stock down to its low-water mark wakes JavaScript at once; an empty
// stock waits for JavaScript; a failed dial gives its counter back and holds the stock until
// release; a closed stock's counters are never used after, and its connections go with it.
// JavaScript keeps no object per connection: it hears that one connected, went away idle, or
// read its header.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net, { type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DialStock, type StockHandlers, type StockKeys } from '../../src/engine/substrate/dial-stock.js';
import { DialedConn, type Endpoint } from '../../src/engine/substrate/dialed-conn.js';
import type { PairEnd } from '../../src/engine/substrate/pair.js';
import { encodePreamble, parsePreamble } from '../../src/engine/protocol/preamble.js';
import { START_HEADER_VERSION_FRAMED, encodeStartHeader } from '../../src/engine/protocol/start-header.js';
import { segmentsOf } from '../helpers/tcp-segments.js';
import { startService } from '../helpers/tunnel.js';
import { noEngine, testEngine } from '../helpers/data-plane.js';
import { waitUntil, within } from '../soak/support.js';
import { EngineConstant } from '../../src/engine/substrate/codes.js';
import { Engine } from '../../src/engine/substrate/engine.js';

const PREAMBLE = 60;
const PREFIX = 40;

/** A white's data port that hands out each connection with the preamble it read. */
class FakeWhite {
  private server!: net.Server;
  port = 0;
  private readonly ready: Array<{ socket: Socket; preamble: Buffer }> = [];
  private readonly waiters: Array<(c: { socket: Socket; preamble: Buffer }) => void> = [];

  async start(port = 0): Promise<void> {
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
    await new Promise<void>((r) => this.server.listen(port, '127.0.0.1', r));
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

/** Values a handler reports, awaited in order. */
class Queue<T> {
  readonly seen: T[] = [];
  private taken = 0;
  private readonly waiters: Array<(v: T) => void> = [];
  push(v: T): void {
    this.seen.push(v);
    const w = this.waiters.shift();
    if (w) {
      this.taken += 1;
      w(v);
    }
  }
  next(): Promise<T> {
    if (this.taken < this.seen.length) return Promise.resolve(this.seen[this.taken++]!);
    return new Promise((r) => this.waiters.push(r));
  }
}

interface Ended {
  pair: number;
  end: PairEnd;
  reachedService: boolean;
  header: Buffer | null;
}

/** Service table ids for this file's stocks (any id above 0 the engine has not seen). */
let nextTable = 1000;

const newKeys = (): StockKeys => ({ sessionId: randomBytes(16), dataKey: randomBytes(32) });

function openStock(port: number, keys: StockKeys, service?: Endpoint, engine: Engine = testEngine()!) {
  const connected = new Queue<void>();
  const closed = new Queue<void>();
  const failed = new Queue<Error>();
  const held = new Queue<{ conn: number; header: Buffer }>();
  const forwarded = new Queue<{ pair: number; header: Buffer }>();
  const ends = new Queue<Ended>();
  const reused = new Queue<void>();
  const handlers: StockHandlers = {
    onConnected: () => connected.push(),
    onFailed: (error) => failed.push(error),
    onClosed: () => closed.push(),
    onHeld: (conn, header) => held.push({ conn, header }),
    onForwarded: ({ pair, header }) => forwarded.push({ pair, header }),
    onReused: () => reused.push(),
    onPairEnd: (pair, end, reachedService, header) => ends.push({ pair, end, reachedService, header }),
  };
  // A service table of one position (index 0) routing to service.
  let routes: number | undefined;
  if (service) {
    routes = nextTable++;
    engine.handle.setRoutes(routes, [[service.ip, service.port, service.keepAliveSec]]);
  }
  const stock = new DialStock(engine, { ip: '127.0.0.1', port, keepAliveSec: 0 }, keys, PREFIX, handlers, routes);
  return { stock, connected, closed, failed, held, forwarded, ends, reused };
}

const counterOf = (preamble: Buffer): number => parsePreamble(preamble).counter;
const END = Buffer.alloc(4);
const frame = (text: string): Buffer => {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(Buffer.byteLength(text));
  return Buffer.concat([length, Buffer.from(text)]);
};
/** A start header of a session whose connections are framed, without the successor credit. */
const framedHeader = (srcPort: number): Buffer => {
  const h = header(srcPort);
  h[0] = START_HEADER_VERSION_FRAMED;
  return h;
};

/** Reads frames from a socket: each payload, null for END. */
class FrameReader {
  private buffered = Buffer.alloc(0);
  private readonly waiting: Array<() => void> = [];
  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      for (const wake of this.waiting.splice(0)) wake();
    });
  }
  async next(): Promise<Buffer | null> {
    for (;;) {
      if (this.buffered.length >= 4) {
        const length = this.buffered.readUInt32BE(0);
        if (this.buffered.length >= 4 + length) {
          const payload = this.buffered.subarray(4, 4 + length);
          this.buffered = this.buffered.subarray(4 + length);
          return length === 0 ? null : payload;
        }
      }
      await within(new Promise<void>((r) => this.waiting.push(r)), 5000, 'a frame');
    }
  }
}
const header = (srcPort: number): Buffer => encodeStartHeader({ family: 4, srcAddress: '192.0.2.7', srcPort, dstAddress: '198.51.100.1', dstPort: 443 }, 0);

describe('an engine\'s stock', { skip: noEngine() }, () => {
  const white = new FakeWhite();
  before(() => white.start());
  after(() => white.close());

  it('dials one connection per credit, each with its counter\'s preamble as the protocol signs it, in order, and no more', async () => {
    const engine = testEngine()!;
    const base = engine.stats().conns;
    const keys = newKeys();
    const s = openStock(white.port, keys);
    s.stock.add(1, 3, 2);
    const got = [await white.next(), await white.next()];
    const expected = (counter: number): string => encodePreamble(keys.sessionId, counter, keys.dataKey).toString('hex');
    assert.deepEqual(new Set(got.map((c) => c.preamble.toString('hex'))), new Set([expected(1), expected(2)]));
    await s.connected.next();
    await s.connected.next();
    // The engine dials every credit in the turn it gets it: a third would be held too.
    assert.equal(engine.stats().conns, base + 2);
    // A header on one of them is a credit the engine answers with counter 3, with no JavaScript call.
    got[0]!.socket.write(randomBytes(PREFIX));
    const third = await white.next();
    assert.equal(third.preamble.toString('hex'), expected(3));
    await s.held.next();
    s.stock.close();
    for (const c of [...got, third]) c.socket.destroy();
  });

  it('the handshake\'s last ACK goes with the preamble: the white gets the connection in two segments', async () => {
    const s = openStock(white.port, newKeys());
    s.stock.add(1, 1, 1);
    const one = await white.next();
    await s.connected.next();
    try {
      // SYN, then the preamble carrying the ACK (three with a bare ACK between them).
      const segments = await segmentsOf(one.socket.localPort!, one.socket.remotePort!);
      assert.deepEqual(segments, { in: 2, dataIn: 1 }, `the white got ${segments.in} segments (${segments.dataIn} with bytes)`);
    } finally {
      s.stock.close();
      one.socket.destroy();
    }
  });

  it('an empty stock waits for JavaScript: a header\'s credit is spent when counters come', async () => {
    const engine = testEngine()!;
    const keys = newKeys();
    const s = openStock(white.port, keys);
    s.stock.add(1, 1, 1);
    const one = await white.next();
    assert.equal(counterOf(one.preamble), 1);
    await s.connected.next();
    const held = engine.stats().conns;
    one.socket.write(randomBytes(PREFIX));
    await s.held.next();
    // The credit came with the header, in the same engine turn that would have dialed: nothing did.
    assert.equal(engine.stats().conns, held, 'a connection was dialed from an empty stock');
    assert.equal(white.waiting, 0);
    // Topped up, without a credit: the header's credit is spent on it at once.
    s.stock.add(2, 1, 0);
    const two = await white.next();
    assert.deepEqual(two.preamble, encodePreamble(keys.sessionId, 2, keys.dataKey));
    await s.connected.next();
    s.stock.close();
    one.socket.destroy();
    two.socket.destroy();
  });

  it('counters given ahead of their credits are dialed only when credited, in order', async () => {
    const s = openStock(white.port, newKeys());
    s.stock.add(1, 2, 0);
    s.stock.add(3, 2, 0);
    s.stock.add(5, 0, 3);
    const got = [await white.next(), await white.next(), await white.next()];
    assert.deepEqual(got.map((c) => counterOf(c.preamble)).sort(), [1, 2, 3]);
    for (let i = 0; i < 3; i++) await s.connected.next();
    s.stock.add(5, 0, 1);
    assert.equal(counterOf((await white.next()).preamble), 4);
    await s.connected.next();
    s.stock.close();
    for (const c of got) c.socket.destroy();
  });

  it('an idle connection that goes away is heard, and the engine closes it', async () => {
    const engine = testEngine()!;
    const s = openStock(white.port, newKeys());
    s.stock.add(1, 1, 1);
    const one = await white.next();
    await s.connected.next();
    const held = engine.stats().conns;
    one.socket.destroy();
    await s.closed.next();
    assert.equal(engine.stats().conns, held - 1);
    s.stock.close();
  });

  it('a session change: the old stock\'s counters are never used after it is closed, its idle connections close, and the new one signs with its own keys', async () => {
    const oldKeys = newKeys();
    const old = openStock(white.port, oldKeys);
    old.stock.add(1, 3, 1);
    const idle = await white.next();
    assert.equal(counterOf(idle.preamble), 1);
    await old.connected.next();
    const closed = new Promise<void>((r) => idle.socket.once('close', () => r()));
    old.stock.close();
    old.stock.add(4, 3, 3);  // closed: no effect
    idle.socket.resume();
    await closed;
    const freshKeys = newKeys();
    const fresh = openStock(white.port, freshKeys);
    fresh.stock.add(1, 2, 2);
    const got = [await white.next(), await white.next()];
    assert.deepEqual(new Set(got.map((c) => c.preamble.toString('hex'))), new Set([1, 2].map((n) => encodePreamble(freshKeys.sessionId, n, freshKeys.dataKey).toString('hex'))));
    await fresh.connected.next();
    await fresh.connected.next();
    assert.equal(white.waiting, 0);
    assert.equal(old.connected.seen.length, 1);
    fresh.stock.close();
    for (const c of got) c.socket.destroy();
  });

  it('a failed dial holds the stock until release, and its counter is used again', async () => {
    // A port nobody listens on yet: every dial is refused before its preamble is sent.
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((r) => probe.close(() => r()));
    const keys = newKeys();
    const s = openStock(port, keys);
    s.stock.add(1, 2, 1);
    const error = await s.failed.next();
    assert.equal((error as NodeJS.ErrnoException).code, 'ECONNREFUSED');
    // Held: another credit dials nothing. A dial of its own, posted after the credit and refused
    // alike, marks when the engine has taken the credit.
    s.stock.add(3, 0, 1);
    const marker = new Promise<Error>((onFailed) => DialedConn.dial(testEngine()!, { ip: '127.0.0.1', port, keepAliveSec: 0 }, randomBytes(PREAMBLE), PREFIX, { onConnected: () => {}, onFailed, onPrefix: () => {}, onClosed: () => {} }));
    await marker;
    assert.equal(s.failed.seen.length, 1, 'a held stock dialed');
    // Someone listens now: released, the counter given back and the next one are dialed.
    const late = new FakeWhite();
    await late.start(port);
    s.stock.release();
    const got = [await late.next(), await late.next()];
    assert.deepEqual(got.map((c) => counterOf(c.preamble)).sort(), [1, 2]);
    s.stock.close();
    for (const c of got) c.socket.destroy();
    late.close();
  });

  it('a pair the engine forwarded from the stock is the stock\'s: its end comes with its counts, and a header when the service never answered', async () => {
    const service = await startService();
    const s = openStock(white.port, newKeys(), { ip: '127.0.0.1', port: service.port, keepAliveSec: 0 });
    s.stock.add(1, 2, 1);
    const one = await white.next();
    await s.connected.next();
    const sent = header(40007);
    // Listening before the header goes: the echo may come back before JavaScript hears of the
    // forward (a bookkeeping event, held a few ms).
    let echoed = '';
    const echoedAll = new Promise<void>((r) => one.socket.on('data', (d: Buffer) => {
      echoed += d.toString();
      if (echoed.length >= 5) r();
    }));
    one.socket.write(Buffer.concat([sent, Buffer.from('hello')]));
    const { pair, header: reported } = await s.forwarded.next();
    assert.ok(pair > 0);
    assert.deepEqual(reported, sent);
    // The successor was dialed with no JavaScript call in between.
    const two = await white.next();
    await s.connected.next();
    await echoedAll;
    // The session ends: the stock closes (its idle connection with it), the live pair goes on.
    const twoClosed = new Promise<void>((r) => two.socket.once('close', () => r()));
    two.socket.resume();
    s.stock.close();
    await twoClosed;
    one.socket.end();
    const ended = await s.ends.next();
    assert.equal(echoed, 'hello');
    assert.deepEqual({ pair: ended.pair, fromA: ended.end.bytesFromA, fromB: ended.end.bytesFromB, reached: ended.reachedService, header: ended.header, error: ended.end.error }, { pair, fromA: 5, fromB: 5, reached: true, header: null, error: null });
    service.server.close();
  });

  it('a framed connection carries one client after another, the next start header read with the last END', async () => {
    // The service answers the first bytes it gets and closes, as an HTTP server does.
    const service = await startService((socket) => socket.once('data', (d: Buffer) => socket.end(`got:${d.toString()}`)));
    const s = openStock(white.port, newKeys(), { ip: '127.0.0.1', port: service.port, keepAliveSec: 0 });
    s.stock.add(1, 2, 1);
    const one = await white.next();
    await s.connected.next();
    const frames = new FrameReader(one.socket);
    one.socket.write(Buffer.concat([framedHeader(40011), frame('one')]));
    assert.equal((await frames.next())?.toString(), 'got:one');
    assert.equal(await frames.next(), null, "the service's FIN comes as END");
    // END up, the next client's header and its whole request in one write: the gray reads them
    // together, keeps what follows END for the connection's next use, and forwards it.
    one.socket.write(Buffer.concat([END, framedHeader(40012), frame('two'), END]));
    await s.reused.next();
    assert.equal((await frames.next())?.toString(), 'got:two');
    assert.equal(await frames.next(), null);
    const forwarded = [await s.forwarded.next(), await s.forwarded.next()];
    assert.deepEqual(forwarded.map((f) => f.header.readUInt16BE(2)), [40011, 40012]);
    const ends = [await s.ends.next(), await s.ends.next()];
    assert.deepEqual(ends.map((e) => [e.end.bytesFromA, e.end.bytesFromB, e.end.error]), [[3, 7, null], [3, 7, null]]);
    // Neither header was a credit: the stock's one connection served both.
    assert.equal(white.waiting, 0);
    one.socket.end(END);
    await s.reused.next();
    s.stock.close();
    service.server.close();
  });

  it('wakes JavaScript once the stock is down to its low-water mark, however long its bookkeeping events may be held', async () => {
    // JavaScript tops a stock up when it hears of the headers that used its counters; were those
    // events held as long as bookkeeping may be, the engine would run dry and the white's pool
    // would get no successors. This engine holds them a minute.
    const engine = Engine.open(1, 60_000);
    assert.ok(typeof engine !== 'string', String(engine));
    const service = await startService();
    const s = openStock(white.port, newKeys(), { ip: '127.0.0.1', port: service.port, keepAliveSec: 0 }, engine);
    const low = EngineConstant.stockLowWater;
    // One credit and two counters above the mark: the first dial leaves low + 1, the first
    // header's successor leaves low, and the second header's successor finds the stock at the mark.
    s.stock.add(1, low + 2, 1);
    const conns: Socket[] = [];
    let forwards = 0;
    try {
      for (let i = 0; i < 3; i++) {
        const c = await white.next();
        conns.push(c.socket);
        assert.equal(counterOf(c.preamble), i + 1);
        if (i < 2) {
          c.socket.write(header(40100 + i));
          forwards += 1;
        }
      }
      const heard = [await within(s.forwarded.next(), 10_000, 'the first forward heard'), await within(s.forwarded.next(), 10_000, 'the second forward heard')];
      assert.deepEqual(heard.map((f) => f.header), [header(40100), header(40101)]);
    } finally {
      // The pairs' ends are bookkeeping, held too: taken from the engine, not waited a minute for.
      for (const socket of conns) socket.destroy();
      await waitUntil(() => {
        engine.catchUp();
        return s.ends.seen.length === forwards;
      }, 'the forwarded pairs ended');
      s.stock.close();
      service.server.close();
    }
  });

  it('a header the engine does not forward (an IPv4 address with non-zero padding, as the decoder refuses) is held for JavaScript', async () => {
    const service = await startService();
    const s = openStock(white.port, newKeys(), { ip: '127.0.0.1', port: service.port, keepAliveSec: 0 });
    s.stock.add(1, 2, 1);
    const one = await white.next();
    await s.connected.next();
    const bad = header(40009);
    bad[8 + 4] = 1;  // the source address's padding
    one.socket.write(bad);
    const got = await s.held.next();
    assert.deepEqual(got.header, bad);
    assert.equal(s.forwarded.seen.length, 0);
    // Its header was a credit all the same: the successor.
    const successor = await white.next();
    // JavaScript takes charge of it and refuses it: the white sees the close.
    const closed = new Promise<void>((r) => one.socket.once('close', () => r()));
    one.socket.resume();
    DialedConn.held(testEngine()!, got.conn, () => {}).destroy();
    await closed;
    s.stock.close();
    successor.socket.destroy();
    service.server.close();
  });

  it('a forwarded pair whose service refused ends flagged, with its start header', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port: refusing } = server.address() as AddressInfo;
    await new Promise<void>((r) => server.close(() => r()));
    const s = openStock(white.port, newKeys(), { ip: '127.0.0.1', port: refusing, keepAliveSec: 0 });
    s.stock.add(1, 1, 1);
    const one = await white.next();
    await s.connected.next();
    const sent = header(40008);
    one.socket.on('error', () => {});
    one.socket.write(sent);
    await s.forwarded.next();
    const ended = await s.ends.next();
    assert.equal(ended.reachedService, false);
    assert.equal((ended.end.error as NodeJS.ErrnoException | null)?.code, 'ECONNREFUSED');
    assert.deepEqual(ended.header, sent);
    s.stock.close();
    one.socket.destroy();
  });

  it('refuses keys of the wrong size', () => {
    assert.throws(() => new DialStock(testEngine()!, { ip: '127.0.0.1', port: white.port, keepAliveSec: 0 }, { sessionId: randomBytes(16), dataKey: randomBytes(31) }, PREFIX, {} as StockHandlers), /keys/);
  });
});
