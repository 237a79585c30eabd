// The engine's events cross to JavaScript in batches (native/engine.h kEventRecordBytes): one
// thread-safe call carries every event queued while JavaScript was busy, decoded once into the
// union in their order, and an engine holds the event loop only while something is open.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { EngineConstant, EventRecordFlag, EventType, PairEndFlag } from '../../src/engine/substrate/codes.js';
import type { EngineHandle } from '../../src/engine/substrate/engine.js';
import { decodeBatch, type Address, type EngineEvent, type EventBatch } from '../../src/engine/substrate/events.js';
import { noEngine } from '../helpers/data-plane.js';

/** One record as the addon writes it; inline: its inline bytes (addresses, or a short prefix). */
function record(type: number, id: number, listenerId: number, code: number, ports: [number, number], flags: number, a: number, b: number, stock = 0, inline: Buffer = Buffer.alloc(0)): ArrayBuffer {
  const bytes = new ArrayBuffer(EngineConstant.eventRecordBytes);
  new Int32Array(bytes, 0, 8).set([type, id | 0, listenerId | 0, code, ports[0], ports[1], flags, stock | 0]);
  new Float64Array(bytes, 32, 2).set([a, b]);
  new Uint8Array(bytes, EngineConstant.eventRecordInline, EngineConstant.eventRecordInlineBytes).set(inline);
  return bytes;
}

/** Inline addresses: the remote's IP bytes, then the local's, 16 bytes each. */
function addresses(remote: number[], local: number[] = []): Buffer {
  const out = Buffer.alloc(32);
  out.set(remote, 0);
  out.set(local, 16);
  return out;
}

function concat(parts: ArrayBuffer[]): ArrayBuffer {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(new Uint8Array(p), at);
    at += p.byteLength;
  }
  return out.buffer;
}

/** An event with its addresses as plain values (they are decoded on reading). */
function plain(event: EngineEvent): Record<string, unknown> {
  const isAddress = (v: unknown): v is Address => typeof v === 'object' && v !== null && 'ip' in v && 'port' in v;
  const out: Record<string, unknown> = { ...event };
  // Some are made when read (getters), so each is read by name.
  for (const k of ['remote', 'local', 'header']) {
    if (!(k in event)) continue;
    const v = (event as unknown as Record<string, unknown>)[k];
    out[k] = isAddress(v) ? { ip: v.ip, port: v.port } : v;
  }
  return out;
}

const v6 = (...groups: number[]): number[] => groups.flatMap((g) => [g >> 8, g & 0xff]);

describe('decoding a batch of engine events', () => {
  it('gives each record its own parts, inline or in the side array, in the engine\'s order', () => {
    const header = Buffer.alloc(40, 7);
    const preamble = Buffer.alloc(60, 1);
    const F = EventRecordFlag;
    const records = concat([
      record(EventType.accepted, 5, 2, 0, [40000, 9000], F.hasPrefix | F.hasAddresses | F.hasLocal, 2 ** 40 + 1, 3, 0, addresses([127, 0, 0, 2], [127, 0, 0, 1])),
      record(EventType.header, 6, 0, 0, [0, 40], F.inlinePrefix, 0, 7, 0, header),
      record(EventType.pairEnd, 7, PairEndFlag.endedReused, 111, [0, 0], 0, 2 ** 40, 3),
      record(EventType.pairEnd, 0xfffffff0, PairEndFlag.endedBeforeConnect, 111, [0, 40], F.inlinePrefix, 0, 0, 0xfffffff1, header),
      record(EventType.gone, 8, 2, 2, [5000, 0], F.hasAddresses, 0, 0, 13, addresses([10, 0, 0, 3])),
      record(EventType.joinedLent, 9, 3, 1, [40001, 0], F.hasAddresses | F.remoteIPv6, 10, 11, 0, addresses(v6(0, 0, 0, 0, 0, 0, 0, 1))),
      record(EventType.accepted, 12, 2, 0, [40002, 0], F.hasPrefix | F.hasAddresses, 0, 0, 0, addresses([10, 0, 0, 1])),
      record(EventType.accepted, 13, 2, 0, [1, 2], F.hasAddresses | F.hasLocal | F.remoteIPv6 | F.localIPv6, 0, 0, 0, addresses(v6(0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304), v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
      record(EventType.poolPairEnd, 14, 3, 0, [3, 0], F.hasAddresses | F.remoteIPv6, 0, 0, 0, addresses(v6(0, 0, 0, 0, 0, 0, 0x0102, 0x0304))),
    ]);
    const side = [preamble, Buffer.alloc(0)];
    const events = decodeBatch(records, side);
    const expected = [
      { type: 'accepted', conn: 5, listener: 2, prefix: preamble, remote: { ip: '127.0.0.2', port: 40000 }, local: { ip: '127.0.0.1', port: 9000 }, counter: 2 ** 40 + 1, session: 3 },
      { type: 'header', conn: 6, header, pair: 7, stock: 0, credit: true },
      { type: 'pairEnd', pair: 7, errno: 111, bytesFromA: 2 ** 40, bytesFromB: 3, endedBeforeConnect: false, stock: 0, header: null, reused: true },
      { type: 'pairEnd', pair: 0xfffffff0, errno: 111, bytesFromA: 0, bytesFromB: 0, endedBeforeConnect: true, stock: 0xfffffff1, header, reused: false },
      { type: 'gone', conn: 8, listener: 2, reason: 'data', stock: 13, remote: { ip: '10.0.0.3', port: 5000 } },
      { type: 'joinedLent', pair: 9, listener: 3, client: 10, lent: 11, remote: { ip: '::1', port: 40001 }, credit: false },
      { type: 'accepted', conn: 12, listener: 2, prefix: Buffer.alloc(0), remote: { ip: '10.0.0.1', port: 40002 }, local: null, counter: 0, session: 0 },
      // As inet_ntop wrote them: an IPv4-mapped address, and one with 96 zero bits ahead of an IPv4 one.
      { type: 'accepted', conn: 13, listener: 2, prefix: Buffer.alloc(0), remote: { ip: '::ffff:1.2.3.4', port: 1 }, local: { ip: '2001:db8::1', port: 2 }, counter: 0, session: 0 },
      { type: 'poolPairEnd', pair: 14, listener: 3, errno: 0, bytesFromClient: 0, bytesToClient: 0, endedIdle: false, client: 0, remote: { ip: '::1.2.3.4', port: 3 }, ageMs: 0, idleMs: 0 },
    ];
    assert.deepEqual(events.map(plain), expected);
  });

  it('refuses a type this build does not know', () => {
    assert.throws(() => decodeBatch(record(99, 1, 0, 0, [0, 0], 0, 0, 0), []), /event type 99, unknown to this build/);
  });
});

/** The addon as engine.ts loads it, to see its calls themselves. */
function addon(): { createEngine(onEvents: (...batch: EventBatch) => void, threads?: number, holdMs?: number): EngineHandle } {
  const require = createRequire(import.meta.url);
  const dir = fileURLToPath(new URL('../../../native', import.meta.url));
  return require((require('node-gyp-build') as { resolve(dir: string): string }).resolve(dir)) as ReturnType<typeof addon>;
}

describe('an engine\'s event batches', { skip: noEngine() }, () => {
  it('carries the events queued while JavaScript was busy in one call, in order', async () => {
    const calls: EngineEvent[][] = [];
    let wake = (): void => {};
    const engine = addon().createEngine((...batch) => {
      calls.push(decodeBatch(...batch));
      wake();
    });
    const [listener, port] = engine.listen('127.0.0.1', 0, 128, 0, 1000, 0, false, null);
    const clients = Array.from({ length: 40 }, () => net.connect(port, '127.0.0.1').on('error', () => {}));
    await Promise.all(clients.map((c) => new Promise((r) => c.once('connect', r))));
    // JavaScript stays busy (no callback can run) until the engine holds all 40: their events queue.
    const deadline = Date.now() + 10_000;
    while (engine.stats().conns < 40 && Date.now() < deadline) { /* busy on purpose */ }
    assert.equal(engine.stats().conns, 40);
    const events = (): EngineEvent[] => calls.flat();
    while (events().length < 40) await new Promise<void>((r) => (wake = r));
    assert.ok(calls.length < 40 && calls.length <= 2, `40 events came in ${calls.length} calls`);
    const accepted = events().filter((e) => e.type === 'accepted');
    assert.equal(accepted.length, 40);
    const ports = new Set(clients.map((c) => c.localPort));
    for (const e of accepted) {
      assert.equal(e.listener, listener);
      assert.ok(ports.has(e.remote.port), `an accepted connection from an unknown port ${e.remote.port}`);
    }
    // The ids are given in accept order, and the events come in that order.
    const ids = accepted.map((e) => e.conn);
    assert.deepEqual(ids, [...ids].sort((x, y) => x - y));
    for (const c of clients) c.destroy();
    engine.closeListener(listener);
  });

  it('holds the event loop only while a listener or pair is open', async () => {
    // A child that opens a listener, takes one connection and closes both: it must exit by
    // itself, with no timer or socket of its own left.
    const engineModule = new URL('../../src/engine/substrate/engine.js', import.meta.url).href;
    const script = `
      import net from 'node:net';
      import { Engine } from ${JSON.stringify(engineModule)};
      const engine = Engine.open();
      const [listener, port] = engine.handle.listen('127.0.0.1', 0, 16, 0, 1000, 0, false, null);
      engine.addListener(listener, {
        accepted(e) { engine.handle.closeConn(e.conn); engine.handle.closeListener(listener); console.log('accepted'); },
        refused() {}, failed() {}, joinedLent() {},
      });
      const client = net.connect(port, '127.0.0.1');
      client.on('error', () => {});
      client.on('close', () => {});
      client.resume();
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    assert.equal(out.trim(), 'accepted');
    assert.equal(code, 0);
  });

  describe('bookkeeping held back', () => {
    /** An engine with holdMs whose calls are recorded; next() resolves at the next call. */
    function recorded(holdMs: number): { engine: EngineHandle; calls: EngineEvent[][]; next(): Promise<EngineEvent[]> } {
      const calls: EngineEvent[][] = [];
      let waiters: ((events: EngineEvent[]) => void)[] = [];
      const engine = addon().createEngine((...batch) => {
        const events = decodeBatch(...batch);
        calls.push(events);
        for (const w of waiters.splice(0)) w(events);
      }, 1, holdMs);
      return { engine, calls, next: () => new Promise((r) => waiters.push(r)) };
    }

    /** Until the events recorded include one matching want. */
    async function until(r: ReturnType<typeof recorded>, want: (e: EngineEvent) => boolean): Promise<EngineEvent> {
      for (;;) {
        const found = r.calls.flat().find(want);
        if (found) return found;
        await r.next();
      }
    }

    /** Two clients of a listener joined into a pair by JavaScript: the pair's id and the clients. */
    async function pairOf(r: ReturnType<typeof recorded>, listener: number, port: number): Promise<{ pair: number; sockets: net.Socket[] }> {
      const sockets = [net.connect(port, '127.0.0.1'), net.connect(port, '127.0.0.1')];
      for (const c of sockets) c.on('error', () => {});
      const ports = await Promise.all(sockets.map((c) => new Promise<number>((ok) => c.once('connect', () => ok(c.localPort!)))));
      const conns = await Promise.all(ports.map((p) => until(r, (e) => e.type === 'accepted' && e.listener === listener && e.remote.port === p)));
      const ids = conns.map((e) => (e as Extract<EngineEvent, { type: 'accepted' }>).conn);
      return { pair: r.engine.join(ids[0]!, ids[1]!, null, null), sockets };
    }

    const endOf = (pair: number) => (e: EngineEvent): boolean => e.type === 'pairEnd' && e.pair === pair;

    it('a pair\'s end waits for the next event JavaScript must act on, and comes before it in the same call', async () => {
      const r = recorded(60_000);
      const [listener, port] = r.engine.listen('127.0.0.1', 0, 16, 0, 1000, 0, false, null);
      const first = await pairOf(r, listener, port);
      const second = await pairOf(r, listener, port);
      for (const c of [...first.sockets, ...second.sockets]) c.end();
      // Both pairs end in the engine; their ends are bookkeeping, held.
      while (r.engine.stats().pairs > 0) await new Promise((ok) => setTimeout(ok, 5));
      await new Promise((ok) => setImmediate(ok));
      assert.equal(r.calls.flat().filter((e) => e.type === 'pairEnd').length, 0, 'no pair end was posted on its own');
      // A client accepted now must be heard at once, and brings the held ends along, in order.
      const late = net.connect(port, '127.0.0.1').on('error', () => {});
      await new Promise((ok) => late.once('connect', ok));
      await until(r, (e) => e.type === 'accepted' && e.remote.port === late.localPort);
      const call = r.calls.find((events) => events.some(endOf(first.pair)))!;
      assert.deepEqual(call.map((e) => e.type), ['pairEnd', 'pairEnd', 'accepted']);
      assert.deepEqual(new Set(call.slice(0, 2).map((e) => (e as Extract<EngineEvent, { type: 'pairEnd' }>).pair)), new Set([first.pair, second.pair]));
      late.destroy();
      r.engine.closeListener(listener);
    });

    it('a held end is posted when its hold is over, with nothing else to bring it', async () => {
      const r = recorded(20);
      const [listener, port] = r.engine.listen('127.0.0.1', 0, 16, 0, 1000, 0, false, null);
      const { pair, sockets } = await pairOf(r, listener, port);
      for (const c of sockets) c.end();
      const end = await until(r, endOf(pair));
      assert.deepEqual(end, { type: 'pairEnd', pair, errno: 0, bytesFromA: 0, bytesFromB: 0, endedBeforeConnect: false, stock: 0, header: null, reused: false });
      r.engine.closeListener(listener);
    });

    it('destroy posts what was held at once, the destroyed pair\'s end last', async () => {
      const r = recorded(60_000);
      const [listener, port] = r.engine.listen('127.0.0.1', 0, 16, 0, 1000, 0, false, null);
      const ended = await pairOf(r, listener, port);
      const live = await pairOf(r, listener, port);
      for (const c of ended.sockets) c.end();
      while (r.engine.stats().pairs > 1) await new Promise((ok) => setTimeout(ok, 5));
      r.engine.destroy(live.pair);
      await until(r, endOf(live.pair));
      const ends = r.calls.flat().filter((e) => e.type === 'pairEnd') as Extract<EngineEvent, { type: 'pairEnd' }>[];
      assert.deepEqual(ends.map((e) => e.pair), [ended.pair, live.pair]);
      for (const c of live.sockets) c.destroy();
      r.engine.closeListener(listener);
    });
  });
});
