// Both data planes against the same promises, with real sockets on 127.0.0.1: every byte both
// ways (heads first), half-close, errors, destroy(), bytes Node had buffered before the join,
// live byte counts. Then what only the splice plane has: idle pairs hold no pipes, and a
// socket with unsent writes is never handed over.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net, { type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Heads, JoinedPair, OnPairClosed, PairResult } from '../../src/engine/data-plane/joined-pair.js';
import { joinWithStreams } from '../../src/engine/data-plane/js-plane.js';
import { joinWithSplice, spliceAvailable, spliceStats, spliceUnavailableReason } from '../../src/engine/data-plane/splice-plane.js';
import { ending } from '../helpers/tunnel.js';

type Join = (a: Socket, b: Socket, heads: Heads, onClosed: OnPairClosed) => JoinedPair;

const planes: Array<{ name: string; join: Join }> = [
  { name: 'js', join: joinWithStreams },
  {
    name: 'splice',
    join: (a, b, heads, onClosed) => {
      const pair = joinWithSplice(a, b, heads, onClosed);
      assert.ok(pair, 'the splice plane refused a pair it should take');
      return pair;
    },
  },
];

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The relay in the middle: `client` talks to `a`, `service` talks to `b`, and a/b get joined. */
interface Rig {
  client: Socket;
  a: Socket;
  b: Socket;
  service: Socket;
}

async function listen(): Promise<Server> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

function portOf(server: Server): number {
  return (server.address() as net.AddressInfo).port;
}

async function connectThrough(server: Server): Promise<[Socket, Socket]> {
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const dialed = net.connect({ host: '127.0.0.1', port: portOf(server), allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => dialed.once('connect', resolve).once('error', reject));
  return [dialed, await accepted];
}

async function rig(front: Server, back: Server): Promise<Rig> {
  const [client, a] = await connectThrough(front);
  const [b, service] = await connectThrough(back);
  return { client, a, b, service };
}

/** Everything a socket receives until its peer's FIN. */
function readAll(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}

/** Resolves once `socket` has received `n` bytes (consuming them). */
function received(socket: Socket, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  return new Promise((resolve) => {
    const onData = (c: Buffer): void => {
      chunks.push(c);
      got += c.length;
      if (got >= n) {
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
  });
}

function closedResult(): { onClosed: OnPairClosed; result: Promise<PairResult>; calls: () => number } {
  let calls = 0;
  let resolve!: (r: PairResult) => void;
  const result = new Promise<PairResult>((r) => (resolve = r));
  return {
    onClosed: (r) => {
      calls += 1;
      resolve(r);
    },
    result,
    calls: () => calls,
  };
}

/** Resolves when the relay's side of `socket` is gone: a FIN ('end'; the test sockets are
 *  half-open, so they do not close by themselves) or a reset ('close'). */
const gone = (socket: Socket): Promise<void> =>
  new Promise((resolve) => {
    socket.once('end', () => resolve());
    socket.once('close', () => resolve());
  });

describe('data plane', () => {
  let front: Server;
  let back: Server;
  before(async () => {
    front = await listen();
    back = await listen();
  });
  after(() => {
    front.close();
    back.close();
  });

  it('the splice plane is built and starts (npm ci builds native/; see docs/performance.md)', () => {
    assert.equal(spliceAvailable(), true, `native splice plane unavailable: ${spliceUnavailableReason()}`);
  });

  for (const plane of planes) {
    describe(`${plane.name} plane`, () => {
      it('carries 16 MB each way at once, heads first, and counts every byte', async () => {
        const r = await rig(front, back);
        const up = randomBytes(16 * 1024 * 1024);
        const down = randomBytes(16 * 1024 * 1024);
        const headToB = Buffer.from('START-HEADER');
        const headToA = Buffer.from('PROXY-HELLO');
        const done = closedResult();
        plane.join(r.a, r.b, { toA: headToA, toB: headToB }, done.onClosed);
        const atService = readAll(r.service);
        const atClient = readAll(r.client);
        r.client.end(up);
        r.service.end(down);
        assert.equal(sha256(await atService), sha256(Buffer.concat([headToB, up])));
        assert.equal(sha256(await atClient), sha256(Buffer.concat([headToA, down])));
        const result = await done.result;
        assert.equal(result.error, null);
        assert.equal(result.bytesFromA, up.length);
        assert.equal(result.bytesFromB, down.length);
        assert.equal(done.calls(), 1);
      });

      it('passes a half-close on: the client shuts its side and still gets the answer', async () => {
        const r = await rig(front, back);
        const done = closedResult();
        plane.join(r.a, r.b, {}, done.onClosed);
        const question = randomBytes(300_000);
        const heard = readAll(r.service);
        const answer = readAll(r.client);
        r.client.end(question);
        const got = await heard; // the FIN arrived, yet the service's side is still open
        r.service.end(sha256(got));
        assert.equal((await answer).toString(), sha256(question));
        assert.equal((await done.result).error, null);
      });

      it('ends the pair on a reset and reports the error', async () => {
        const r = await rig(front, back);
        const done = closedResult();
        plane.join(r.a, r.b, {}, done.onClosed);
        r.client.on('error', () => {});
        r.client.write('hello');
        await received(r.service, 5);
        const clientGone = gone(r.client);
        r.service.resetAndDestroy();
        const result = await done.result;
        assert.ok(result.error, 'a reset must surface as an error');
        await clientGone;
      });

      it('a service that resets mid-download makes the client see a reset, not a clean end', async () => {
        const r = await rig(front, back);
        const done = closedResult();
        plane.join(r.a, r.b, {}, done.onClosed);
        r.service.on('error', () => {});
        const atClient = ending(r.client);
        r.service.write(randomBytes(1024 * 1024));
        await received(r.client, 64 * 1024); // part of the download is through
        r.service.resetAndDestroy();
        assert.equal(await atClient, 'reset');
        assert.ok((await done.result).error, 'the reset is the pair\'s error');
      });

      it('a client that resets mid-upload makes the service see a reset, not a clean end', async () => {
        const r = await rig(front, back);
        const done = closedResult();
        plane.join(r.a, r.b, {}, done.onClosed);
        r.client.on('error', () => {});
        const atService = ending(r.service);
        r.client.write(randomBytes(1024 * 1024));
        await received(r.service, 64 * 1024);
        r.client.resetAndDestroy();
        assert.equal(await atService, 'reset');
        assert.ok((await done.result).error);
      });

      it('destroy() (a drain deadline, a removed gray) resets both ends', async () => {
        const r = await rig(front, back);
        const done = closedResult();
        const pair = plane.join(r.a, r.b, {}, done.onClosed);
        r.client.write('ping');
        await received(r.service, 4);
        const ends = Promise.all([ending(r.client), ending(r.service)]);
        pair.destroy();
        assert.deepEqual(await ends, ['reset', 'reset']);
        assert.equal((await done.result).error, null, 'destroy() is not an error of the pair');
      });

      it('passes a FIN on as a FIN after a one-way download', async () => {
        const r = await rig(front, back);
        const done = closedResult();
        plane.join(r.a, r.b, {}, done.onClosed);
        const atClient = ending(r.client);
        r.service.end(randomBytes(1024 * 1024));
        assert.equal(await atClient, 'end');
        r.client.end();
        assert.equal((await done.result).error, null);
      });

      it('destroy() closes both sides and reports once, without an error', async () => {
        const r = await rig(front, back);
        const done = closedResult();
        const pair = plane.join(r.a, r.b, {}, done.onClosed);
        r.client.on('error', () => {});
        r.service.on('error', () => {});
        r.client.write('ping');
        await received(r.service, 4);
        pair.destroy();
        await Promise.all([gone(r.client), gone(r.service)]);
        const result = await done.result;
        assert.equal(result.error, null);
        assert.equal(result.bytesFromA, 4);
        assert.equal(done.calls(), 1);
      });

      it('forwards the bytes Node had already buffered before the join', async () => {
        const r = await rig(front, back);
        const early = randomBytes(200_000);
        // Let Node read (some of) them into the stream's own buffer first.
        r.a.pause();
        const someBuffered = new Promise<void>((resolve) => r.a.once('readable', () => resolve()));
        r.client.write(early);
        await someBuffered;
        assert.ok(r.a.readableLength > 0, 'the test needs bytes in the JS buffer');
        const done = closedResult();
        plane.join(r.a, r.b, {}, done.onClosed);
        const atService = received(r.service, early.length);
        assert.equal(sha256((await atService).subarray(0, early.length)), sha256(early));
        r.client.end();
        r.service.end();
        assert.equal((await done.result).bytesFromA, early.length);
      });

      it('reports live byte counts while the pair is open', async () => {
        const r = await rig(front, back);
        const done = closedResult();
        const pair = plane.join(r.a, r.b, {}, done.onClosed);
        r.client.write(randomBytes(70_000));
        await received(r.service, 70_000);
        r.service.write(randomBytes(1234));
        await received(r.client, 1234);
        assert.equal(pair.bytesFromA(), 70_000);
        assert.equal(pair.bytesFromB(), 1234);
        r.client.end();
        r.service.end();
        await done.result;
      });
    });
  }

  describe('splice plane only', () => {
    it('idle pairs hold no pipes, and ended pairs leave nothing behind', async () => {
      const before = spliceStats();
      const rigs: Rig[] = [];
      const results: Array<Promise<PairResult>> = [];
      for (let i = 0; i < 100; i++) {
        const r = await rig(front, back);
        const done = closedResult();
        assert.ok(joinWithSplice(r.a, r.b, {}, done.onClosed));
        results.push(done.result);
        rigs.push(r);
        // Enough to switch the direction from copying to splicing, so pipes are really used.
        r.client.write(randomBytes(300_000));
        await received(r.service, 300_000);
      }
      const busy = spliceStats();
      assert.equal(busy.pairs - before.pairs, 100);
      // Pipes are borrowed per burst and come back to a free list capped at 64.
      assert.ok(busy.pipes <= 64, `${busy.pipes} pipes open for 100 idle pairs`);
      for (const r of rigs) {
        r.client.end();
        r.service.end();
      }
      await Promise.all(results);
      assert.equal(spliceStats().pairs, before.pairs);
    });

    it('does not take a socket whose writes are still queued', async () => {
      const r = await rig(front, back);
      r.service.pause(); // nobody reads: b's writes back up
      const big = randomBytes(8 * 1024 * 1024);
      r.b.write(big);
      assert.ok(r.b.writableLength > 0);
      const pair = joinWithSplice(r.a, r.b, {}, () => {});
      assert.equal(pair, null);
      assert.equal(r.a.destroyed || r.b.destroyed, false, 'a refused pair is left untouched');
      for (const s of [r.client, r.a, r.b, r.service]) s.destroy();
    });
  });
});
