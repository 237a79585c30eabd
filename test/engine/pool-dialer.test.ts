// The gray's pool dialer with an engine's stock (a recording stand-in for the engine here; the
// engine's side is test/engine/dial-stock.test.ts): the counters stay JavaScript's, each given
// out once and in order, at most STOCK_LEAD past the credits it knows; explicit credits are
// handed over as they come; start headers top the stock up in steps of STOCK_TOP_UP; a failed
// dial releases the stock only after the backoff; the session's end closes the stock.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { PoolDialer, STOCK_LEAD, STOCK_TOP_UP } from '../../src/engine/gray/pool-dialer.js';
import type { LinkEvents, PoolLink, PoolStock, StockEvents } from '../../src/engine/gray/pool-link.js';
import { parsePreamble } from '../../src/engine/protocol/preamble.js';
import { encodeStartHeader } from '../../src/engine/protocol/start-header.js';
import { silentLogger } from '../../src/log.js';
import { grayConfigFor } from '../helpers/tunnel.js';

class RecordingStock implements PoolStock {
  counters: number[] = [];
  credits = 0;
  adds = 0;
  releases = 0;
  closed = false;
  events!: StockEvents;
  add(preambles: readonly Buffer[], credits: number): void {
    this.adds += 1;
    this.counters.push(...preambles.map((p) => parsePreamble(p).counter));
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

/** A link the stand-in engine dialed and the dialer adopted; its events drive the dialer. */
function connectOne(stock: RecordingStock): LinkEvents {
  let events!: LinkEvents;
  const link: PoolLink = { forward: () => ({ closed: Promise.resolve(), destroy: () => {} }), destroy: () => {} };
  stock.events.connected((e) => {
    events = e;
    return link;
  });
  return events;
}

const HEADER = encodeStartHeader({ family: 4, srcAddress: '192.0.2.1', srcPort: 40000, dstAddress: '198.51.100.1', dstPort: 443 }, 0);

function dialerWith(stock: RecordingStock, retryBaseMs = 20): { dialer: PoolDialer; activated: number[] } {
  const activated: number[] = [];
  const config = grayConfigFor('g', randomBytes(32), 1, 2, {}, { reconnectBaseMs: retryBaseMs, reconnectMaxMs: retryBaseMs });
  const dialer = new PoolDialer({
    stock: (events) => {
      stock.events = events;
      return stock;
    },
    where: '127.0.0.1:1',
    sessionId: randomBytes(16),
    dataKey: randomBytes(32),
    poolTarget: 4,
    config,
    logger: silentLogger(),
    onActivated: () => activated.push(1),
    onForwarded: () => activated.push(1),
    onForwardEnded: () => {},
    onPoolReady: () => {},
  });
  return { dialer, activated };
}

describe('the pool dialer with an engine\'s stock', () => {
  it('gives each counter once, in order, at most STOCK_LEAD past the credits, and hands explicit credits over', () => {
    const stock = new RecordingStock();
    const { dialer } = dialerWith(stock);
    dialer.grant(4);
    assert.equal(stock.credits, 4);
    assert.deepEqual(stock.counters, Array.from({ length: 4 + STOCK_LEAD }, (_, i) => i + 1));
    dialer.grant(4);  // not more: nothing new
    dialer.grant(6);
    assert.equal(stock.credits, 6);
    assert.deepEqual(stock.counters, Array.from({ length: 6 + STOCK_LEAD }, (_, i) => i + 1));
    assert.equal(dialer.countersGiven, 6 + STOCK_LEAD);
    dialer.stop();
  });

  it('tops the stock up once STOCK_TOP_UP start headers were answered, never past the lead', () => {
    const stock = new RecordingStock();
    const { dialer, activated } = dialerWith(stock);
    dialer.grant(4);
    const links = [connectOne(stock), connectOne(stock), connectOne(stock), connectOne(stock)];
    const adds = stock.adds;
    for (let i = 0; i < STOCK_TOP_UP - 1; i++) (links[i % 4]!).activated(HEADER);
    assert.equal(stock.adds, adds, 'topped up before STOCK_TOP_UP headers');
    links[0]!.activated(HEADER);
    assert.equal(stock.adds, adds + 1);
    assert.equal(activated.length, STOCK_TOP_UP);
    // The engine spent the headers' credits itself: none are handed over for them.
    assert.equal(stock.credits, 4);
    assert.deepEqual(stock.counters, Array.from({ length: 4 + STOCK_TOP_UP + STOCK_LEAD }, (_, i) => i + 1));
    // A malformed header is still a credit the white counted (and the engine used).
    links[1]!.activated(Buffer.alloc(40));
    assert.equal(activated.length, STOCK_TOP_UP);
    assert.ok(dialer.countersGiven <= 4 + STOCK_TOP_UP + 1 + STOCK_LEAD);
    dialer.stop();
    assert.ok(stock.closed);
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
