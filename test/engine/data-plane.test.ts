// Both data planes against the same promises, with real sockets on 127.0.0.1: every byte both
// ways (heads first), half-close, errors, destroy(), bytes the client sent before the join,
// live byte counts. On the JS plane the relay's two connections are Node sockets joined with
// stream.pipe; on the engine they are connections its listeners accepted and hold, joined in
// the engine. Then what only the engine has: idle pairs hold no pipes.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net, { type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Heads, Pair, OnPairEnd, PairEnd } from '../../src/engine/substrate/pair.js';
import { join as jsJoin } from '../../src/engine/substrate/js-plane.js';
import { EngineListener, type EngineConn } from '../../src/engine/substrate/listener.js';
import { noEngine, testEngine } from '../helpers/data-plane.js';
import { corkedSender, segmentsOf } from '../helpers/tcp-segments.js';
import { ending } from '../helpers/tunnel.js';

/** The relay in the middle: `client` talks to side a, `service` to side b, and join makes them
 *  a pair. */
interface Rig {
  client: Socket;
  service: Socket;
  join(heads: Heads, onEnd: OnPairEnd): Pair;
  /** Has the client send bytes that reach the relay before the join. */
  sendEarly(bytes: Buffer): Promise<void>;
}

interface Plane {
  readonly name: string;
  readonly skip: string | false;
  open(): Promise<void>;
  close(): void;
  rig(): Promise<Rig>;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

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

function closedResult(): { onClosed: OnPairEnd; result: Promise<PairEnd>; calls: () => number } {
  let calls = 0;
  let resolve!: (r: PairEnd) => void;
  const result = new Promise<PairEnd>((r) => (resolve = r));
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

/** How a socket that has ended both ways closes: 'closed', or the error it saw first. */
const closing = (socket: Socket): Promise<string> =>
  new Promise((resolve) => {
    let error = '';
    socket.once('error', (err: NodeJS.ErrnoException) => (error ||= `error ${err.code ?? err.message}`));
    socket.once('close', () => resolve(error || 'closed'));
  });

function jsPlane(): Plane {
  let front: Server;
  let back: Server;
  return {
    name: 'js',
    skip: false,
    async open() {
      front = await listen();
      back = await listen();
    },
    close() {
      front.close();
      back.close();
    },
    async rig() {
      const [client, a] = await connectThrough(front);
      const [b, service] = await connectThrough(back);
      return {
        client,
        service,
        join: (heads, onEnd) => jsJoin(a, b, heads, onEnd),
        async sendEarly(bytes) {
          // Let Node read (some of) them into the stream's own buffer first.
          a.pause();
          const someBuffered = new Promise<void>((resolve) => a.once('readable', () => resolve()));
          client.write(bytes);
          await someBuffered;
          assert.ok(a.readableLength > 0, 'the test needs bytes in the JS buffer');
        },
      };
    },
  };
}

/** Held connections of two engine listeners: the client's (side a) and the service's (side b,
 *  the service connects in, which is the same to a pair). */
interface EnginePlane extends Plane {
  /** A client on side a and, on side b, whatever `dial` connects to the service listener's port. */
  rigFor(dial: (port: number) => Promise<unknown>): Promise<{ client: Socket; join: Rig['join'] }>;
}

function enginePlane(): EnginePlane {
  const accepted = new Map<EngineListener, EngineConn[]>();
  const waiters = new Map<EngineListener, Array<() => void>>();
  const listeners: EngineListener[] = [];
  const open = (): EngineListener => {
    const listener: EngineListener = new EngineListener(
      testEngine()!,
      { host: '127.0.0.1', port: 0, prefixBytes: 0, prefixTimeoutMs: 0, keepAliveSec: 0, watch: 'reset' },
      {
        onConnection: (conn) => {
          accepted.get(listener)!.push(conn);
          for (const wake of waiters.get(listener)!.splice(0)) wake();
        },
        onRefused: () => assert.fail('refused'),
        onError: (err) => assert.fail(err),
      },
      'data-plane test',
    );
    accepted.set(listener, []);
    waiters.set(listener, []);
    listeners.push(listener);
    return listener;
  };
  const held = async (listener: EngineListener): Promise<EngineConn> => {
    while (accepted.get(listener)!.length === 0) await new Promise<void>((resolve) => waiters.get(listener)!.push(resolve));
    return accepted.get(listener)!.shift()!;
  };
  const connect = async (listener: EngineListener): Promise<[Socket, EngineConn]> => {
    const socket = net.connect({ host: '127.0.0.1', port: listener.port, allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    return [socket, await held(listener)];
  };
  let front: EngineListener;
  let back: EngineListener;
  return {
    name: 'engine',
    skip: noEngine(),
    async open() {
      front = open();
      back = open();
    },
    close() {
      for (const l of listeners) l.close();
    },
    async rig() {
      const [client, a] = await connect(front);
      const [service, b] = await connect(back);
      return {
        client,
        service,
        join: (heads, onEnd) => a.joinWith(b, heads, onEnd),
        async sendEarly(bytes) {
          // They wait in the kernel until the join.
          await new Promise<void>((resolve) => client.write(bytes, () => resolve()));
        },
      };
    },
    async rigFor(dial) {
      const [client, a] = await connect(front);
      await dial(back.port);
      const b = await held(back);
      return { client, join: (heads, onEnd) => a.joinWith(b, heads, onEnd) };
    },
  };
}

const planes: Plane[] = [jsPlane(), enginePlane()];

describe('data plane', () => {
  it('the engine is built and starts (npm ci builds native/; see docs/performance.md)', () => {
    assert.ok(testEngine(), String(noEngine()));
  });

  for (const plane of planes) {
    describe(`${plane.name} plane`, { skip: plane.skip }, () => {
      before(() => plane.open());
      after(() => plane.close());

      it('carries 16 MB each way at once, heads first, and counts every byte', async () => {
        const r = await plane.rig();
        const up = randomBytes(16 * 1024 * 1024);
        const down = randomBytes(16 * 1024 * 1024);
        const headToB = Buffer.from('START-HEADER');
        const headToA = Buffer.from('PROXY-HELLO');
        const done = closedResult();
        r.join({ toA: headToA, toB: headToB }, done.onClosed);
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
        const r = await plane.rig();
        const done = closedResult();
        r.join({}, done.onClosed);
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
        const r = await plane.rig();
        const done = closedResult();
        r.join({}, done.onClosed);
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
        const r = await plane.rig();
        const done = closedResult();
        r.join({}, done.onClosed);
        r.service.on('error', () => {});
        const atClient = ending(r.client);
        r.service.write(randomBytes(1024 * 1024));
        await received(r.client, 64 * 1024); // part of the download is through
        r.service.resetAndDestroy();
        assert.equal(await atClient, 'reset');
        assert.ok((await done.result).error, 'the reset is the pair\'s error');
      });

      it('a client that resets mid-upload makes the service see a reset, not a clean end', async () => {
        const r = await plane.rig();
        const done = closedResult();
        r.join({}, done.onClosed);
        r.client.on('error', () => {});
        const atService = ending(r.service);
        r.client.write(randomBytes(1024 * 1024));
        await received(r.service, 64 * 1024);
        r.client.resetAndDestroy();
        assert.equal(await atService, 'reset');
        assert.ok((await done.result).error);
      });

      it('destroy() (a drain deadline, a removed gray) resets both ends', async () => {
        const r = await plane.rig();
        const done = closedResult();
        const pair = r.join({}, done.onClosed);
        r.client.write('ping');
        await received(r.service, 4);
        const ends = Promise.all([ending(r.client), ending(r.service)]);
        pair.destroy();
        assert.deepEqual(await ends, ['reset', 'reset']);
        assert.equal((await done.result).error, null, 'destroy() is not an error of the pair');
      });

      it('passes a FIN on as a FIN after a one-way download', async () => {
        const r = await plane.rig();
        const done = closedResult();
        r.join({}, done.onClosed);
        const atClient = ending(r.client);
        r.service.end(randomBytes(1024 * 1024));
        assert.equal(await atClient, 'end');
        r.client.end();
        assert.equal((await done.result).error, null);
      });

      it('destroy() closes both sides and reports once, without an error', async () => {
        const r = await plane.rig();
        const done = closedResult();
        const pair = r.join({}, done.onClosed);
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

      it('forwards the bytes the client sent before the join', async () => {
        const r = await plane.rig();
        const early = randomBytes(200_000);
        await r.sendEarly(early);
        const done = closedResult();
        r.join({}, done.onClosed);
        const atService = received(r.service, early.length);
        assert.equal(sha256((await atService).subarray(0, early.length)), sha256(early));
        r.client.end();
        r.service.end();
        assert.equal((await done.result).bytesFromA, early.length);
      });

      it('a head, the bytes and the FIN a client sent before the join reach the service in order', async () => {
        const r = await plane.rig();
        const early = randomBytes(3000);
        // The FIN is in with the bytes before the join: the pair's first read finds both.
        await new Promise<void>((resolve) => r.client.end(early, () => resolve()));
        const done = closedResult();
        r.join({ toB: Buffer.from('START-HEADER') }, done.onClosed);
        assert.equal(sha256(await readAll(r.service)), sha256(Buffer.concat([Buffer.from('START-HEADER'), early])));
        const atClient = ending(r.client);
        r.service.end('bye');
        assert.equal(await atClient, 'end');
        const result = await done.result;
        assert.equal(result.error, null);
        assert.equal(result.bytesFromA, early.length);
        assert.equal(result.bytesFromB, 3);
      });

      it('a head goes out while the client says nothing, so a service that speaks first is heard', async () => {
        const r = await plane.rig();
        const done = closedResult();
        r.join({ toB: Buffer.from('START-HEADER') }, done.onClosed);
        assert.equal((await received(r.service, 12)).toString(), 'START-HEADER');
        r.service.write('220 ready\r\n');
        assert.equal((await received(r.client, 11)).toString(), '220 ready\r\n');
        r.client.end();
        r.service.end();
        const result = await done.result;
        assert.equal(result.bytesFromA, 0);
        assert.equal(result.bytesFromB, 11);
      });

      it('a message with its FIN right behind it each way: both ends get every byte and an end, the pair no error', async () => {
        const r = await plane.rig();
        const done = closedResult();
        r.join({}, done.onClosed);
        const question = randomBytes(1500);
        const heard = readAll(r.service);
        r.client.end(question);
        assert.equal(sha256(await heard), sha256(question));
        // The second FIN ends the pair: both ends must still hear the last bytes and an end. (A
        // reset right behind the bytes would read as an end to Node too: libuv reports a hang-up
        // after a partial read as the end, without reading the error.)
        const answer = readAll(r.client);
        const closes = Promise.all([closing(r.client), closing(r.service)]);
        r.service.end(sha256(question));
        assert.equal((await answer).toString(), sha256(question));
        assert.deepEqual(await closes, ['closed', 'closed']);
        assert.equal((await done.result).error, null);
      });

      it('reports live byte counts while the pair is open', async () => {
        const r = await plane.rig();
        const done = closedResult();
        const pair = r.join({}, done.onClosed);
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

  describe('engine only', { skip: noEngine() }, () => {
    const plane = enginePlane();
    before(() => plane.open());
    after(() => plane.close());

    it('idle pairs hold no pipes, and ended pairs leave nothing behind', async () => {
      const engine = testEngine()!;
      const before = engine.stats();
      const rigs: Rig[] = [];
      const results: Array<Promise<PairEnd>> = [];
      for (let i = 0; i < 100; i++) {
        const r = await plane.rig();
        const done = closedResult();
        r.join({}, done.onClosed);
        results.push(done.result);
        rigs.push(r);
        // Enough to switch the direction from copying to splicing, so pipes are really used.
        r.client.write(randomBytes(300_000));
        await received(r.service, 300_000);
      }
      const busy = engine.stats();
      assert.equal(busy.pairs - before.pairs, 100);
      // Pipes are borrowed per burst and come back to a free list capped at 64.
      assert.ok(busy.pipes <= 64, `${busy.pipes} pipes open for 100 idle pairs`);
      for (const r of rigs) {
        r.client.end();
        r.service.end();
      }
      await Promise.all(results);
      assert.equal(engine.stats().pairs, before.pairs);
    });

    it('bytes with their FIN right behind go on as they came, in one segment', async () => {
      // The service sends its answer and its FIN in one segment, as a server that answers and
      // closes usually does (the client, like wrk, then gets them in one too). Sent apart, the
      // FIN is a segment more, which the client's kernel answers with a delayed ACK, so the
      // sender's tail loss probe sends the FIN again.
      const answer = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n';
      const service = { sender: null as ReturnType<typeof corkedSender> | null };
      const { client, join } = await plane.rigFor(async (port) => {
        service.sender = corkedSender(port, answer);
        await service.sender.localPort;
      });
      try {
        const done = closedResult();
        const got = readAll(client);
        join({}, done.onClosed);
        assert.equal((await got).toString(), answer);
        const segments = await segmentsOf(client.localPort!, client.remotePort!);
        // The handshake's SYN-ACK, then the answer with the FIN.
        assert.deepEqual(segments, { in: 2, dataIn: 1 }, `the client got ${segments.in} segments (${segments.dataIn} with bytes)`);
        client.end();
        assert.equal(await service.sender!.exited, 0);
        assert.equal((await done.result).error, null);
      } finally {
        client.destroy();
        service.sender?.child.kill();
      }
    });
  });
});
