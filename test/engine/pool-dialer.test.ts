// The gray's pool dialer with an engine's stock (a recording stand-in for the engine here; the
// engine's side is test/engine/dial-stock.test.ts): the session's keys go to the stock (the
// engine signs the preambles); the counters stay JavaScript's, each given out once and in
// order, at most STOCK_LEAD past the credits it knows; explicit credits are handed over as they
// come; start headers top the stock up in steps of STOCK_TOP_UP; idle connections are counted,
// with no object each, from the stock's events; a failed dial releases the stock only after the
// backoff; the session's end closes the stock.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { PoolDialer, STOCK_LEAD, STOCK_TOP_UP } from '../../src/engine/gray/pool-dialer.js';
import type { PoolLink, PoolStock, StockEvents } from '../../src/engine/gray/pool-link.js';
import { START_HEADER_CREDIT, START_HEADER_VERSION_FRAMED, encodeStartHeader, type StartHeaderFields } from '../../src/engine/protocol/start-header.js';
import { silentLogger } from '../../src/log.js';
import { grayConfigFor } from '../helpers/tunnel.js';

class RecordingStock implements PoolStock {
  counters: number[] = [];
  credits = 0;
  adds = 0;
  releases = 0;
  closed = false;
  keys!: { sessionId: Buffer; dataKey: Buffer };
  events!: StockEvents;
  add(firstCounter: number, count: number, credits: number): void {
    this.adds += 1;
    for (let i = 0; i < count; i++) this.counters.push(firstCounter + i);
    this.credits += credits;
  }
  release(): void {
    this.releases += 1;
  }
  close(): void {
    this.closed = true;
  }
  destroyed: number[] = [];
  destroyPair(pair: number): void {
    this.destroyed.push(pair);
  }
}

const HEADER = encodeStartHeader({ family: 4, srcAddress: '192.0.2.1', srcPort: 40000, dstAddress: '198.51.100.1', dstPort: 443 }, 0);

interface Seen {
  activated: StartHeaderFields[];
  forwarded: Array<[number, Buffer]>;
  ready: number[];
}

function dialerWith(stock: RecordingStock, retryBaseMs = 20): { dialer: PoolDialer; seen: Seen; sessionId: Buffer; dataKey: Buffer } {
  const seen: Seen = { activated: [], forwarded: [], ready: [] };
  const config = grayConfigFor('g', randomBytes(32), 1, 2, {}, { reconnectBaseMs: retryBaseMs, reconnectMaxMs: retryBaseMs });
  const sessionId = randomBytes(16);
  const dataKey = randomBytes(32);
  const dialer = new PoolDialer({
    stock: (keys, events) => {
      stock.keys = keys;
      stock.events = events;
      return stock;
    },
    where: '127.0.0.1:1',
    sessionId,
    dataKey,
    poolTarget: 3,
    config,
    logger: silentLogger(),
    onActivated: (_link, client) => seen.activated.push(client),
    onForwarded: ({ pair, header }) => seen.forwarded.push([pair, header]),
    onForwardEnded: () => {},
    onPoolReady: (idle) => seen.ready.push(idle),
  });
  return { dialer, seen, sessionId, dataKey };
}

function link(): PoolLink & { destroyed: boolean } {
  const l = { destroyed: false, forward: () => ({ closed: Promise.resolve(), destroy: () => {} }), destroy: () => void (l.destroyed = true) };
  return l;
}

describe('the pool dialer with an engine\'s stock', () => {
  it('gives the stock the session\'s keys, each counter once, in order, at most STOCK_LEAD past the credits, and hands explicit credits over', () => {
    const stock = new RecordingStock();
    const { dialer, sessionId, dataKey } = dialerWith(stock);
    assert.deepEqual(stock.keys, { sessionId, dataKey });
    dialer.grant(4);
    assert.equal(stock.credits, 4);
    assert.deepEqual(stock.counters, Array.from({ length: 4 + STOCK_LEAD }, (_, i) => i + 1));
    dialer.grant(4);  // not more: nothing new
    assert.equal(stock.adds, 1);
    dialer.grant(6);
    assert.equal(stock.credits, 6);
    assert.deepEqual(stock.counters, Array.from({ length: 6 + STOCK_LEAD }, (_, i) => i + 1));
    assert.equal(dialer.countersGiven, 6 + STOCK_LEAD);
    dialer.stop();
    assert.ok(stock.closed);
    dialer.grant(9);  // after the session: nothing
    assert.equal(stock.credits, 6);
  });

  it('tops the stock up once STOCK_TOP_UP start headers were read, never past the lead', () => {
    const stock = new RecordingStock();
    const { dialer, seen } = dialerWith(stock);
    dialer.grant(4);
    const adds = stock.adds;
    for (let i = 0; i < STOCK_TOP_UP - 1; i++) stock.events.forwarded({ pair: 100 + i, header: HEADER, credit: true });
    assert.equal(stock.adds, adds, 'topped up before STOCK_TOP_UP headers');
    stock.events.activated(link(), HEADER, true);
    assert.equal(stock.adds, adds + 1);
    assert.equal(seen.forwarded.length + seen.activated.length, STOCK_TOP_UP);
    // The engine spent the headers' credits itself: none are handed over for them.
    assert.equal(stock.credits, 4);
    assert.deepEqual(stock.counters, Array.from({ length: 4 + STOCK_TOP_UP + STOCK_LEAD }, (_, i) => i + 1));
    // A malformed header is still a credit the white counted (and the engine used).
    stock.events.activated(link(), Buffer.alloc(40), true);
    assert.equal(seen.activated.length, 1);
    assert.ok(dialer.countersGiven <= 4 + STOCK_TOP_UP + 1 + STOCK_LEAD);
    dialer.stop();
  });

  it('counts the idle connections from the stock\'s events, says when the pool is ready, and decodes only what JavaScript forwards', () => {
    const stock = new RecordingStock();
    const { dialer, seen } = dialerWith(stock);
    dialer.grant(4);
    stock.events.connected();
    stock.events.connected();
    assert.deepEqual(seen.ready, []);
    stock.events.connected();
    assert.deepEqual(seen.ready, [3]);
    stock.events.connected();
    assert.equal(dialer.idleCount, 4);
    // Forwarded by the engine: handed on as it came, not decoded.
    const opaque = Buffer.alloc(40, 7);
    stock.events.forwarded({ pair: 17, header: opaque, credit: true });
    assert.deepEqual(seen.forwarded, [[17, opaque]]);
    assert.equal(dialer.idleCount, 3);
    // Held for JavaScript: decoded and forwarded; a header the decoder refuses closes its link.
    stock.events.activated(link(), HEADER, true);
    assert.equal(seen.activated.length, 1);
    assert.equal(seen.activated[0]!.srcPort, 40000);
    const bad = link();
    stock.events.activated(bad, Buffer.alloc(40), true);
    assert.ok(bad.destroyed);
    assert.equal(seen.activated.length, 1);
    assert.equal(dialer.idleCount, 1);
    stock.events.closed();
    assert.equal(dialer.idleCount, 0);
    assert.deepEqual(seen.ready, [3], 'ready is said once');
    // The engine spent the headers' credits itself: none are handed over for them.
    assert.equal(stock.credits, 4);
    dialer.stop();
  });

  it('counts a framed header without credit as no successor, and a reused connection as idle again', () => {
    const stock = new RecordingStock();
    const { dialer, seen } = dialerWith(stock);
    dialer.grant(4);
    for (let i = 0; i < 4; i++) stock.events.connected();
    const given = dialer.countersGiven;
    // Headers without credit use no counter: the stock is never topped up for them.
    for (let i = 0; i < 2 * STOCK_TOP_UP; i++) {
      stock.events.forwarded({ pair: 200 + i, header: HEADER, credit: false });
      assert.equal(dialer.idleCount, 3);
      stock.events.reused();
      assert.equal(dialer.idleCount, 4);
    }
    assert.equal(dialer.countersGiven, given);
    assert.equal(seen.forwarded.length, 2 * STOCK_TOP_UP);
    // A framed header held for JavaScript decodes (credit flag set); without the flag too.
    const framed = Buffer.from(HEADER);
    framed[0] = START_HEADER_VERSION_FRAMED;
    framed[7] = START_HEADER_CREDIT;
    stock.events.activated(link(), framed, true);
    framed[7] = 0;
    stock.events.activated(link(), framed, false);
    assert.equal(seen.activated.length, 2);
    // Any other flag is refused, as is a framed header on a JS-plane link (no stock: see the
    // start-header test).
    framed[7] = 2;
    const bad = link();
    stock.events.activated(bad, framed, false);
    assert.ok(bad.destroyed);
    dialer.stop();
    // After the session, a reused connection is not counted.
    const stopped = dialer.idleCount;
    stock.events.reused();
    assert.equal(dialer.idleCount, stopped);
  });

  it('releases a stock a failed dial held only after the backoff, once per backoff', async () => {
    const stock = new RecordingStock();
    const released = new Promise<number>((resolve) => {
      const started = Date.now();
      stock.release = () => {
        stock.releases += 1;
        resolve(Date.now() - started);
      };
    });
    const { dialer } = dialerWith(stock, 30);
    dialer.grant(2);
    stock.events.failed(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
    stock.events.failed(new Error('connect ECONNREFUSED'));  // a second one in the same backoff
    assert.equal(stock.releases, 0);
    // The backoff is at least half its base (30 ms), and never skipped.
    assert.ok((await released) >= 14);
    assert.equal(stock.releases, 1);
    dialer.stop();
    assert.ok(stock.closed);
  });
});
