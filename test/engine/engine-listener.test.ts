// An engine's listeners (the white's intake with an engine), with real sockets on
// 127.0.0.1: a connection is reported after exactly its prefix and the bytes behind it stay for
// the pair; every refusal the engine makes by itself; the two watch modes; joining held
// connections, also one that has gone; closing a listener; a port already taken.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net, { type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { ErrorCodes, RelayError } from '../../src/errors.js';
import type { GoneReason } from '../../src/engine/substrate/held-conn.js';
import type { PairEnd } from '../../src/engine/substrate/pair.js';
import { EngineListener, type EngineConn, type ListenerOptions, type JoinedLent, type PoolPairEnd, type Refusal, type Verified } from '../../src/engine/substrate/listener.js';
import { encodePreamble, PREAMBLE_BYTES, PREAMBLE_MAGIC } from '../../src/engine/protocol/preamble.js';
import { clientAddressInfo, encodeStartHeader } from '../../src/engine/protocol/start-header.js';
import { pairError } from '../../src/engine/substrate/engine.js';
import { noEngine, testEngine } from '../helpers/data-plane.js';

interface Paired {
  joined: JoinedLent;
  /** The held client JavaScript admitted, if it did. */
  held: EngineConn | undefined;
  /** Its end, as the engine reports it (onPoolPairEnd). */
  ended: Promise<PoolPairEnd>;
}

interface Harness {
  listener: EngineListener;
  conns: Array<{ conn: EngineConn; prefix: Buffer; verified: Verified }>;
  nextPaired(): Promise<Paired>;
  refusals: Array<{ refusal: Refusal; received: Buffer }>;
  nextConn(): Promise<{ conn: EngineConn; prefix: Buffer; verified: Verified }>;
  nextRefusal(): Promise<{ refusal: Refusal; received: Buffer }>;
}

const open: EngineListener[] = [];
after(() => {
  for (const l of open) l.close();
});

/** A gray's data port: preambles checked against a fresh session (epoch 1) with 10 credits. */
function grayDataPort(): { back: Harness; sessionId: Buffer; dataKey: Buffer } {
  const back = harness({ prefixBytes: PREAMBLE_BYTES, prefixMagic: PREAMBLE_MAGIC, prefixTimeoutMs: 5000, watch: 'any' });
  const sessionId = randomBytes(16);
  const dataKey = randomBytes(32);
  back.listener.setSession(1, Buffer.concat([sessionId, dataKey]));
  back.listener.setCredits(1, 10);
  return { back, sessionId, dataKey };
}

function harness(options: Partial<ListenerOptions>): Harness {
  const conns: Harness['conns'] = [];
  const refusals: Harness['refusals'] = [];
  const paired: Paired[] = [];
  const ends = new Map<number, (end: PoolPairEnd) => void>();
  const waiters = { conn: [] as Array<() => void>, refusal: [] as Array<() => void>, paired: [] as Array<() => void> };
  const wake = (list: Array<() => void>): void => list.splice(0).forEach((f) => f());
  const listener = new EngineListener(testEngine()!, 
    { host: '127.0.0.1', port: 0, prefixBytes: 0, prefixTimeoutMs: 0, keepAliveSec: 0, watch: 'reset', ...options },
    {
      onConnection: (conn, prefix, verified) => {
        conns.push({ conn, prefix, verified });
        wake(waiters.conn);
      },
      onJoinedLent: (joined, held) => {
        paired.push({ joined, held, ended: new Promise((resolve) => ends.set(joined.client, resolve)) });
        wake(waiters.paired);
      },
      onPoolPairEnd: (end) => ends.get(end.client)!(end),
      onRefused: (refusal, _ip, detail) => {
        refusals.push({ refusal, received: detail.received });
        wake(waiters.refusal);
      },
      onError: (err) => assert.fail(err),
    },
    'test port',
  );
  open.push(listener);
  let taken = 0;
  let refused = 0;
  let pairedTaken = 0;
  const next = <T>(list: T[], waitList: Array<() => void>, index: () => number): Promise<T> =>
    new Promise((resolve) => {
      const check = (): void => {
        if (list.length > index()) resolve(list[index()]!);
        else waitList.push(check);
      };
      check();
    });
  return {
    listener,
    conns,
    refusals,
    nextConn: () => next(conns, waiters.conn, () => taken).then((c) => (taken++, c)),
    nextRefusal: () => next(refusals, waiters.refusal, () => refused).then((r) => (refused++, r)),
    nextPaired: () => next(paired, waiters.paired, () => pairedTaken).then((p) => (pairedTaken++, p)),
  };
}

/** The kernel's timer on the established IPv4 socket local:remote (seen from the accepting side). */
function tcpTimer(localPort: number, remotePort: number): { kind: number; ticks: number } {
  const hex = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0');
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || !f[1]!.endsWith(`:${hex(localPort)}`) || !f[2]!.endsWith(`:${hex(remotePort)}`) || f[3] !== '01') continue;
    const [kind, ticks] = f[5]!.split(':');
    return { kind: parseInt(kind!, 16), ticks: parseInt(ticks!, 16) };
  }
  throw new Error(`no established socket 127.0.0.1:${localPort} <- :${remotePort} in /proc/net/tcp`);
}

async function dial(port: number, localAddress?: string): Promise<Socket> {
  const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, ...(localAddress ? { localAddress } : {}) });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return socket;
}

/** Everything the socket receives until the other side closes (its FIN, or a reset). */
/** How a socket ended: the error code of a reset, or 'end'. */
function closedBy(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    socket.once('close', () => resolve('end'));
    socket.resume();
  });
}

function closed(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve) => {
    const done = (): void => resolve(Buffer.concat(chunks));
    socket.once('end', done).once('close', done);
  });
}

function received(socket: Socket, bytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  return new Promise((resolve) => {
    const onData = (c: Buffer): void => {
      chunks.push(c);
      total += c.length;
      if (total >= bytes) {
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
  });
}

function gone(conn: EngineConn): Promise<GoneReason> {
  return new Promise((resolve) => conn.watch('any', resolve));
}

describe('engine listener', { timeout: 20_000 }, () => {
  it('is built', () => {
    assert.ok(testEngine(), String(noEngine()));
  });

  it('listens on any address Node would take: IPv4, IPv6, an IPv6 address with a zone index', async () => {
    for (const host of ['127.0.0.1', '::1', '::1%lo']) {
      const h = harness({ host });
      const socket = net.connect({ host: host.split('%')[0]!, port: h.listener.port });
      const { conn } = await h.nextConn();
      assert.equal(conn.localPort, h.listener.port);
      socket.destroy();
      conn.destroy();
      h.listener.close();
    }
  });

  it("gives accepted connections the listener's socket options and local address, also on a wildcard bind", async () => {
    // The engine sets TCP_NODELAY and keepalive once, on the listening socket, and Linux copies
    // them to each accepted socket; the local address is the bound one unless it is a wildcard.
    const kept = harness({ keepAliveSec: 37 });
    const wildcard = harness({ host: '0.0.0.0' });
    for (const [h, keepAlive] of [[kept, true], [wildcard, false]] as const) {
      const client = await dial(h.listener.port);
      const { conn } = await h.nextConn();
      try {
        assert.deepEqual([conn.localAddress, conn.localPort], ['127.0.0.1', h.listener.port]);
        const timer = tcpTimer(h.listener.port, client.localPort!);
        if (keepAlive) {
          // /proc/net/tcp: timer 2 is keepalive; its expiry is in clock ticks (USER_HZ, 100/s).
          assert.equal(timer.kind, 2);
          assert.ok(timer.ticks > 30 * 100 && timer.ticks <= 37 * 100, `keepalive due in ${timer.ticks} ticks, expected about 37 s`);
        } else {
          assert.equal(timer.kind, 0, 'no keepalive timer without keepAliveSec');
        }
      } finally {
        conn.destroy();
        client.destroy();
      }
    }
  });

  it("checks a gray's preambles itself: counter range, session, tag before the window, replays, credits, the implicit credit of a join", async () => {
    const data = harness({ prefixBytes: PREAMBLE_BYTES, prefixMagic: PREAMBLE_MAGIC, prefixTimeoutMs: 2000, watch: 'any' });
    const sessionId = randomBytes(16);
    const dataKey = randomBytes(32);
    data.listener.setSession(7, Buffer.concat([sessionId, dataKey]));
    data.listener.setCredits(7, 2);
    const send = async (preamble: Buffer): Promise<Socket> => {
      const socket = await dial(data.listener.port);
      socket.write(preamble);
      return socket;
    };
    const refusedAs = async (preamble: Buffer): Promise<Refusal> => {
      const socket = await send(preamble);
      // Listening before the refusal is heard: the engine's reset can reach the socket first.
      const ended = closed(socket);
      const { refusal } = await data.nextRefusal();
      await ended;
      return refusal;
    };
    const counterZero = encodePreamble(sessionId, 1, dataKey);
    counterZero.fill(0, 20, 28);
    assert.equal(await refusedAs(counterZero), 'bad-counter');
    assert.equal(await refusedAs(encodePreamble(randomBytes(16), 1, dataKey)), 'other-session');
    // A forged tag is refused before the window: counter 1 is not burned by it.
    assert.equal(await refusedAs(encodePreamble(sessionId, 1, randomBytes(32))), 'bad-tag');
    const first = await send(encodePreamble(sessionId, 1, dataKey));
    const accepted = await data.nextConn();
    assert.deepEqual(accepted.verified, { counter: 1, session: 7 });
    assert.equal(accepted.prefix.length, 0, 'a verified preamble is not copied to JavaScript');
    assert.equal(await refusedAs(encodePreamble(sessionId, 1, dataKey)), 'replay');
    assert.equal(await refusedAs(encodePreamble(sessionId, 3, dataKey)), 'no-credit');
    // Joining a verified connection is worth one credit (its start header), counted by the engine.
    const client = harness({});
    const clientSocket = await dial(client.listener.port);
    const { conn: clientConn } = await client.nextConn();
    const pairEnded = new Promise<PairEnd>((resolve) => clientConn.joinWith(accepted.conn, {}, resolve));
    const second = await send(encodePreamble(sessionId, 3, dataKey));
    assert.deepEqual((await data.nextConn()).verified, { counter: 3, session: 7 });
    // Counter 2 (skipped above) is still good; 4 is beyond 2 explicit + 1 implicit.
    const third = await send(encodePreamble(sessionId, 2, dataKey));
    assert.deepEqual((await data.nextConn()).verified, { counter: 2, session: 7 });
    assert.equal(await refusedAs(encodePreamble(sessionId, 4, dataKey)), 'no-credit');
    data.listener.setCredits(7, 3);
    const fourth = await send(encodePreamble(sessionId, 4, dataKey));
    assert.deepEqual((await data.nextConn()).verified, { counter: 4, session: 7 });
    // A new session starts a new window; with none, every preamble is refused.
    data.listener.setSession(8, Buffer.concat([sessionId, dataKey]));
    assert.equal(await refusedAs(encodePreamble(sessionId, 1, dataKey)), 'no-credit');
    data.listener.setSession(0, null);
    assert.equal(await refusedAs(encodePreamble(sessionId, 1, dataKey)), 'no-session');
    clientSocket.destroy();
    first.destroy();
    await pairEnded;
    for (const s of [second, third, fourth]) s.destroy();
    for (const { conn } of data.conns) conn.destroy();
    client.listener.close();
    data.listener.close();
  });

  it("pairs in the engine from a gray's pool: an admitted client now or when the next connection is verified, a client at accept below the active limit; the start header is the one JavaScript would build", { timeout: 10_000 }, async () => {
    const front = harness({});
    const { back, sessionId, dataKey } = grayDataPort();
    back.listener.setActiveLimit(0);
    // The public port's service is the gray's index 5: every start header names it.
    front.listener.usePool(back.listener, 5);
    const grays: Socket[] = [];
    let counter = 0;
    const verifyOne = async (): Promise<EngineConn> => {
      const gray = await dial(back.listener.port);
      gray.write(encodePreamble(sessionId, ++counter, dataKey));
      grays.push(gray);
      return (await back.nextConn()).conn;
    };
    const headerFor = (client: Socket): Buffer =>
      encodeStartHeader(clientAddressInfo({ address: client.localAddress, port: client.localPort }, { address: client.remoteAddress, port: client.remotePort }), 5);

    // Active limit 0: a client is reported; admitted, it waits in the pool for the next one verified.
    const first = await dial(front.listener.port);
    const announced = (await front.nextConn()).conn;
    front.listener.admit(announced);
    const verified = await verifyOne();
    const p1 = await front.nextPaired();
    assert.equal(p1.held, announced, 'the client JavaScript admitted');
    assert.equal(p1.joined.lent, verified.id);
    const ended1 = p1.ended;
    first.write('one');
    assert.deepEqual(await received(grays[0]!, 43), Buffer.concat([headerFor(first), Buffer.from('one')]));

    // An idle connection on hand: an admitted client takes it at once.
    const idle = await verifyOne();
    const second = await dial(front.listener.port);
    const secondConn = (await front.nextConn()).conn;
    front.listener.admit(secondConn);
    const p2 = await front.nextPaired();
    assert.deepEqual([p2.held, p2.joined.lent], [secondConn, idle.id]);
    const ended2 = p2.ended;

    // Below the active limit (2 running, limit 3), a client is joined at accept, never reported,
    // with the newest idle connection; at the limit the next one is reported again.
    back.listener.setActiveLimit(3);
    const older = await verifyOne();
    const newer = await verifyOne();
    const third = await dial(front.listener.port);
    const p3 = await front.nextPaired();
    assert.equal(p3.joined.lent, newer.id, 'the newest idle connection goes first');
    assert.equal(p3.held, undefined, 'a client joined at accept has no object in JavaScript');
    const thirdPort = third.localPort;
    assert.deepEqual([p3.joined.remote.ip, p3.joined.remote.port], [third.localAddress, thirdPort]);
    const ended3 = p3.ended;
    third.end('three');
    assert.deepEqual(await closed(grays[3]!), Buffer.concat([headerFor(third), Buffer.from('three')]));
    const fourth = await dial(front.listener.port);
    const fourthConn = (await front.nextConn()).conn;
    assert.equal(fourthConn.remotePort, fourth.localPort, 'at the active limit the client is reported');
    front.listener.admit(fourthConn);
    assert.equal((await front.nextPaired()).joined.lent, older.id);
    grays[3]!.end();
    await closed(third);
    const end3 = await ended3;
    assert.deepEqual([end3.bytesFromClient, end3.errno, end3.endedIdle, end3.remote.port, end3.client], [5, 0, false, thirdPort, p3.joined.client]);
    assert.ok(end3.ageMs >= 0);
    for (const socket of [first, second, fourth, ...grays]) socket.destroy();
    await Promise.all([ended1, ended2]);
    front.listener.close();
    back.listener.close();
  });

  it("a pool's pairs are listed on demand (client address, bytes, age); the pool's idle timeout resets a pair silent both ways and flags its end, and spares one that moves", { timeout: 10_000 }, async () => {
    const front = harness({});
    const { back, sessionId, dataKey } = grayDataPort();
    back.listener.setActiveLimit(10);
    front.listener.usePool(back.listener, 0);
    const grays: Socket[] = [];
    const pairOne = async (counter: number): Promise<{ client: Socket; gray: Socket; paired: Paired }> => {
      const gray = await dial(back.listener.port);
      gray.write(encodePreamble(sessionId, counter, dataKey));
      grays.push(gray);
      await back.nextConn();
      const client = await dial(front.listener.port);
      const paired = await front.nextPaired();
      await received(gray, 40);  // the start header
      return { client, gray, paired };
    };
    const silent = await pairOne(1);
    const busy = await pairOne(2);
    silent.client.write('abc');
    await received(silent.gray, 3);
    silent.gray.write('hello');
    await received(silent.client, 5);
    const listed = front.listener.poolPairs().find((p) => p.pair === silent.paired.joined.pair);
    assert.ok(listed, 'the running pair is listed');
    assert.deepEqual([listed.conn, listed.ip, listed.port, listed.fromClient, listed.toClient], [silent.paired.joined.client, '127.0.0.1', silent.client.localPort, 3, 5]);
    assert.ok(listed.ageMs >= 0);
    assert.equal(front.listener.livePairs, 2);
    // 300 ms: the silent pair is reset after at least that; the busy one, a byte every 50 ms, is not.
    const silentClosed = closedBy(silent.client);
    const quietSince = Date.now();
    back.listener.setIdleTimeout(300);
    const silentEnd = await new Promise<PoolPairEnd>((resolve) => {
      const beat = setInterval(() => busy.client.write('.'), 50);
      void silent.paired.ended.then((end) => (clearInterval(beat), resolve(end)));
    });
    assert.ok(Date.now() - quietSince >= 300, 'not before the timeout');
    assert.deepEqual([silentEnd.endedIdle, pairError(silentEnd.errno), silentEnd.bytesFromClient, silentEnd.bytesToClient], [true, null, 3, 5]);
    assert.ok(silentEnd.idleMs >= 300, `idle ${silentEnd.idleMs} ms`);
    assert.equal(await silentClosed, 'ECONNRESET');
    assert.deepEqual(front.listener.poolPairs().map((p) => p.pair), [busy.paired.joined.pair], 'only the busy pair is left');
    back.listener.setIdleTimeout(null);
    busy.client.destroy();
    busy.gray.destroy();
    const busyEnd = await busy.paired.ended;
    assert.equal(busyEnd.endedIdle, false);
    assert.equal(front.listener.livePairs, 0);
    for (const socket of grays) socket.destroy();
    front.listener.close();
    back.listener.close();
  });

  it('a verified connection joins the oldest client waiting in the pool; a client closed while waiting is skipped', { timeout: 10_000 }, async () => {
    const front = harness({});
    const { back, sessionId, dataKey } = grayDataPort();
    front.listener.usePool(back.listener, 0);
    const clients = [await dial(front.listener.port), await dial(front.listener.port), await dial(front.listener.port)];
    const conns: EngineConn[] = [];
    for (let i = 0; i < 3; i++) conns.push((await front.nextConn()).conn);
    conns.sort((a, b) => clients.findIndex((c) => c.localPort === a.remotePort) - clients.findIndex((c) => c.localPort === b.remotePort));
    for (const conn of conns) front.listener.admit(conn);
    conns[0]!.destroy();  // as the broker does at the wait deadline
    const grays: Socket[] = [];
    for (let counter = 1; counter <= 2; counter++) {
      const gray = await dial(back.listener.port);
      gray.write(encodePreamble(sessionId, counter, dataKey));
      grays.push(gray);
      const verified = (await back.nextConn()).conn;
      const paired = await front.nextPaired();
      assert.equal(paired.held, conns[counter], `the oldest client still waiting takes connection ${counter}`);
      assert.equal(paired.joined.lent, verified.id);
    }
    for (const socket of [...clients, ...grays]) socket.destroy();
    front.listener.close();
    back.listener.close();
  });

  it("one pool serves every public port of a gray, each start header naming its port's service; a port pointed at no pool has its clients reported", { timeout: 10_000 }, async () => {
    const ssh = harness({});
    const web = harness({});
    const { back, sessionId, dataKey } = grayDataPort();
    back.listener.setActiveLimit(10);
    ssh.listener.usePool(back.listener, 0);
    web.listener.usePool(back.listener, 3);
    const grays: Socket[] = [];
    let counter = 0;
    const verifyOne = async (): Promise<EngineConn> => {
      const gray = await dial(back.listener.port);
      gray.write(encodePreamble(sessionId, ++counter, dataKey));
      grays.push(gray);
      return (await back.nextConn()).conn;
    };
    const headerFor = (client: Socket, service: number): Buffer =>
      encodeStartHeader(clientAddressInfo({ address: client.localAddress, port: client.localPort }, { address: client.remoteAddress, port: client.remotePort }), service);

    // Below the active limit both ports' clients are joined at accept, from the one pool.
    await verifyOne();
    await verifyOne();
    const toSsh = await dial(ssh.listener.port);
    const pSsh = await ssh.nextPaired();
    toSsh.write('s');
    assert.deepEqual(await received(grays[1]!, 41), Buffer.concat([headerFor(toSsh, 0), Buffer.from('s')]));
    const toWeb = await dial(web.listener.port);
    const pWeb = await web.nextPaired();
    toWeb.write('w');
    assert.deepEqual(await received(grays[0]!, 41), Buffer.concat([headerFor(toWeb, 3), Buffer.from('w')]));

    // The index changes (another session's table): the next header has the new one.
    web.listener.usePool(back.listener, 1);
    await verifyOne();
    const again = await dial(web.listener.port);
    await web.nextPaired();
    again.write('a');
    assert.deepEqual(await received(grays[2]!, 41), Buffer.concat([headerFor(again, 1), Buffer.from('a')]));

    // Pointed at no pool (the gray's table not known yet), a client is reported though an idle
    // connection is on hand and the pairs are below the limit.
    web.listener.usePool(null, 0);
    await verifyOne();
    const waiting = await dial(web.listener.port);
    const reported = (await web.nextConn()).conn;
    assert.equal(reported.remotePort, waiting.localPort);
    // Pointed at the pool again, the client admitted takes the idle connection.
    web.listener.usePool(back.listener, 2);
    back.listener.admit(reported);
    await web.nextPaired();
    waiting.write('x');
    assert.deepEqual(await received(grays[3]!, 41), Buffer.concat([headerFor(waiting, 2), Buffer.from('x')]));
    for (const socket of [toSsh, toWeb, again, waiting, ...grays]) socket.destroy();
    ssh.listener.close();
    web.listener.close();
    back.listener.close();
  });

  it('reports a connection after exactly its prefix; what follows stays for the pair, heads first', async () => {
    const front = harness({});
    const back = harness({ prefixBytes: 4, prefixMagic: Buffer.from('AB'), prefixTimeoutMs: 5000 });
    const client = await dial(front.listener.port);
    const gray = await dial(back.listener.port);
    gray.write('ABCDearly bytes');
    const [c, g] = await Promise.all([front.nextConn(), back.nextConn()]);
    assert.equal(g.prefix.toString(), 'ABCD');
    assert.equal(c.prefix.length, 0);
    assert.equal(c.conn.remotePort, client.localPort);
    assert.equal(c.conn.localPort, front.listener.port);
    assert.deepEqual([g.conn.localAddress, g.conn.localPort], ['', 0], 'a data connection is reported without its local address');
    const result = new Promise<PairEnd>((resolve) => c.conn.joinWith(g.conn, { toA: Buffer.from('[to client]'), toB: Buffer.from('[to gray]') }, resolve));
    assert.equal((await received(client, 22)).toString(), '[to client]early bytes');
    client.end('hello');
    assert.equal((await closed(gray)).toString(), '[to gray]hello');
    gray.end();
    await closed(client);
    const r = await result;
    assert.deepEqual([r.bytesFromA, r.bytesFromB, r.error], [5, 11, null]);
    assert.equal(testEngine()!.stats().conns, 0);
  });

  it('refuses by itself: a wrong first byte at once, silence at the deadline, a FIN before the prefix, bytes right behind it', async () => {
    const h = harness({ prefixBytes: 4, prefixMagic: Buffer.from('AB'), prefixTimeoutMs: 300, watch: 'any' });
    const wrong = await dial(h.listener.port);
    wrong.write('AX');
    const startedWrong = Date.now();
    await closed(wrong);
    assert.ok(Date.now() - startedWrong < 300, 'a wrong magic byte is refused before the deadline');
    assert.deepEqual(await h.nextRefusal(), { refusal: 'bad-magic', received: Buffer.from('AX') });

    const silent = await dial(h.listener.port);
    silent.write('AB');
    const startedSilent = Date.now();
    await closed(silent);
    assert.ok(Date.now() - startedSilent >= 250, 'silence is refused at the deadline');
    assert.deepEqual(await h.nextRefusal(), { refusal: 'timeout', received: Buffer.from('AB') });

    const ended = await dial(h.listener.port);
    ended.end('A');
    await closed(ended);
    assert.deepEqual(await h.nextRefusal(), { refusal: 'ended', received: Buffer.from('A') });

    const eager = await dial(h.listener.port);
    eager.write('ABCD!');
    await closed(eager);
    assert.equal((await h.nextRefusal()).refusal, 'extra');
    assert.equal(h.conns.length, 0, 'none of them was reported');
    assert.equal(testEngine()!.stats().conns, 0);
  });

  it('filters before reading: nobody, only one source, at most maxPending still reading', async () => {
    const h = harness({ prefixBytes: 4, prefixTimeoutMs: 5000, watch: 'any' });
    h.listener.setFilter({ mode: 'nobody' }, 10);
    await closed(await dial(h.listener.port));
    assert.equal((await h.nextRefusal()).refusal, 'no-session');

    h.listener.setFilter({ mode: 'only', ip: '127.0.0.2' }, 10);
    await closed(await dial(h.listener.port, '127.0.0.1'));
    assert.equal((await h.nextRefusal()).refusal, 'wrong-source');

    h.listener.setFilter({ mode: 'only', ip: '127.0.0.1' }, 1);
    const first = await dial(h.listener.port);
    const second = await dial(h.listener.port);
    await closed(second);
    assert.equal((await h.nextRefusal()).refusal, 'too-many');
    first.write('WXYZ');
    const reported = await h.nextConn();
    assert.equal(reported.prefix.toString(), 'WXYZ');
    // The slot is free again once the first finished its prefix.
    const third = await dial(h.listener.port);
    third.write('1234');
    assert.equal((await h.nextConn()).prefix.toString(), '1234');
    for (const { conn } of h.conns) conn.destroy();
    await Promise.all([closed(first), closed(third)]);
    assert.equal(testEngine()!.stats().conns, 0);
  });

  it("watch 'any' hears a byte or a FIN; watch 'reset' ignores a FIN and hears a reset", async () => {
    const pool = harness({ prefixBytes: 1, prefixTimeoutMs: 5000, watch: 'any' });
    const talker = await dial(pool.listener.port);
    talker.write('P');
    const t = await pool.nextConn();
    const talkerGone = gone(t.conn);
    // Listening for the close before it can happen: a socket may emit 'end' without a reader.
    const talkerClosed = closed(talker);
    talker.write('!');
    assert.equal(await talkerGone, 'data');
    await talkerClosed;
    const quitter = await dial(pool.listener.port);
    quitter.write('P');
    const q = await pool.nextConn();
    const quitterGone = gone(q.conn);
    quitter.end();
    assert.equal(await quitterGone, 'closed');
    assert.equal(q.conn.destroyed, true);

    const clients = harness({});
    const client = await dial(clients.listener.port);
    const c = await clients.nextConn();
    assert.throws(() => c.conn.watch('any', () => {}), /watched for 'reset' by its listener, not 'any'/);
    const events: GoneReason[] = [];
    const resetHeard = new Promise<void>((resolve) => c.conn.watch('reset', (reason) => (events.push(reason), resolve())));
    client.end('request');
    // A FIN alone is no reason: prove it by a reset arriving later being the first thing heard.
    const other = await dial(clients.listener.port);
    (await clients.nextConn()).conn.destroy();
    await closed(other);
    assert.deepEqual(events, [], 'a FIN is not heard');
    client.resetAndDestroy();
    await resetHeard;
    assert.deepEqual(events, ['closed']);
    assert.equal(testEngine()!.stats().conns, 0);
  });

  it('joining a connection that has gone ends the pair at once with an error, and the other is closed', async () => {
    const h = harness({});
    const left = await dial(h.listener.port);
    const right = await dial(h.listener.port);
    const first = await h.nextConn();
    const second = await h.nextConn();
    // Accepts may come in either order: a is left's connection.
    const [a, b] = first.conn.remotePort === left.localPort ? [first, second] : [second, first];
    const aGone = new Promise<void>((resolve) => a.conn.watch('reset', () => resolve()));
    left.resetAndDestroy();
    await aGone;
    const rightClosed = closed(right);
    // JavaScript may join before it hears of the reset; the engine must cope either way.
    const result = await new Promise<PairEnd>((resolve) => a.conn.joinWith(b.conn, {}, resolve));
    assert.match(String(result.error?.message), /ECONNRESET/);
    await rightClosed;
    assert.equal(testEngine()!.stats().conns, 0);
  });

  it('a closed listener refuses a connection at once, before the engine thread has taken the close', async () => {
    // Reloads log "config reloaded" right after close(): a client connecting then must be refused.
    for (let i = 0; i < 50; i++) {
      const h = harness({});
      const socket = new net.Socket();
      socket.on('error', () => {});
      h.listener.close();
      const result = await new Promise<string>((resolve) => {
        socket.once('connect', () => resolve('connected')).once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
        socket.connect(h.listener.port, '127.0.0.1');
      });
      socket.destroy();
      assert.equal(result, 'ECONNREFUSED', `attempt ${i}`);
    }
  });

  it('closing a listener closes the connections still reading their prefix; a taken port is RELAY_ERR_LISTEN', async () => {
    const h = harness({ prefixBytes: 8, prefixTimeoutMs: 5000 });
    const waiting = await dial(h.listener.port);
    waiting.write('1234');
    const before = Date.now();
    h.listener.close();
    await closed(waiting);
    assert.ok(Date.now() - before < 2500, 'closed with its listener, not at the deadline');
    await assert.rejects(dial(h.listener.port), /ECONNREFUSED/);

    const holder = harness({});
    assert.throws(
      () => new EngineListener(testEngine()!, { host: '127.0.0.1', port: holder.listener.port, prefixBytes: 0, prefixTimeoutMs: 0, keepAliveSec: 0, watch: 'reset' }, { onConnection: () => {}, onRefused: () => {}, onError: () => {} }, 'second'),
      (err: unknown) => err instanceof RelayError && err.code === ErrorCodes.LISTEN && /EADDRINUSE/.test(err.message) && /second/.test(err.message),
    );
    assert.equal(testEngine()!.stats().conns, 0);
  });
});
