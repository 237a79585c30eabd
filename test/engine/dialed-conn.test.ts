// An engine's dialed connections (the gray's pool with an engine), with real
// sockets on 127.0.0.1: the preamble goes out once connected and the prefix is reported exactly,
// the bytes behind it reaching the service; a refused dial, an idle connection the white closes,
// a service that refuses (flagged as never reached); and a client's FIN that arrives while the
// service is still connecting, which must wait rather than abort that connection. Dialed with a
// service table, the engine forwards by itself once a well-formed start header is in, to the route
// of the header's service; a service without a route is held for JavaScript.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net, { type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DialedConn, type Endpoint } from '../../src/engine/substrate/dialed-conn.js';
import type { PairEnd } from '../../src/engine/substrate/pair.js';
import { noEngine, testEngine } from '../helpers/data-plane.js';
import { ending, startService } from '../helpers/tunnel.js';

const PREFIX = 40;

interface Dialed {
  conn: DialedConn;
  connected: Promise<void>;
  failed: Promise<Error>;
  prefix: Promise<Buffer>;
  closed: Promise<void>;
}

function dial(port: number, preamble: Buffer, routes?: number): Dialed {
  const settle = <T>(): [Promise<T>, (value: T) => void] => {
    let resolve!: (value: T) => void;
    const promise = new Promise<T>((r) => (resolve = r));
    return [promise, resolve];
  };
  const [connected, onConnected] = settle<void>();
  const [failed, onFailed] = settle<Error>();
  const [prefix, onPrefix] = settle<Buffer>();
  const [closed, onClosed] = settle<void>();
  const conn = DialedConn.dial(testEngine()!, { ip: '127.0.0.1', port, keepAliveSec: 0 }, preamble, PREFIX, {
    onConnected: () => onConnected(),
    onFailed: (error) => onFailed(error),
    onPrefix: (bytes) => onPrefix(bytes),
    onClosed: () => onClosed(),
  }, routes);
  return { conn, connected, failed, prefix, closed };
}

/** Reads exactly n bytes from a socket (the rest stays for later readers). */
function readExactly(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk]);
      if (got.length < n) return;
      socket.off('data', onData);
      socket.pause();
      if (got.length > n) socket.unshift(got.subarray(n));
      resolve(got.subarray(0, n));
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.resume();  // a previous read paused it
  });
}

function readAll(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.resume();
  return new Promise((resolve) => socket.once('end', () => resolve(Buffer.concat(chunks))));
}

/** Collects what arrives; the returned function gives it so far. */
function received(socket: Socket): () => Buffer {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return () => Buffer.concat(chunks);
}

/** A port nobody listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('engine dialing', { skip: noEngine() }, () => {
  let white: net.Server;
  let whitePort: number;
  const accepted: Socket[] = [];
  const acceptWaiters: Array<(s: Socket) => void> = [];
  const nextAccepted = (): Promise<Socket> =>
    new Promise((resolve) => {
      const s = accepted.shift();
      if (s) resolve(s);
      else acceptWaiters.push(resolve);
    });
  before(async () => {
    white = net.createServer({ allowHalfOpen: true }, (socket) => {
      // Tests that end a connection with a reset read it from their own listeners; an accepted
      // socket nobody reads must not turn that reset into an uncaught error.
      socket.on('error', () => {});
      const waiter = acceptWaiters.shift();
      if (waiter) waiter(socket);
      else accepted.push(socket);
    });
    await new Promise<void>((resolve) => white.listen(0, '127.0.0.1', resolve));
    whitePort = (white.address() as AddressInfo).port;
  });
  after(() => white.close());

  it('writes the preamble once connected, reports exactly the prefix, and the bytes behind it reach the service after the head', async () => {
    const service = await startService();
    const preamble = randomBytes(60);
    const d = dial(whitePort, preamble);
    const socket = await nextAccepted();
    await d.connected;
    assert.deepEqual(await readExactly(socket, preamble.length), preamble);
    const header = randomBytes(PREFIX);
    socket.write(Buffer.concat([header, Buffer.from('hello')]));
    assert.deepEqual(await d.prefix, header);

    const ended = new Promise<[PairEnd, boolean]>((resolve) => {
      const to: Endpoint = { ip: '127.0.0.1', port: service.port, keepAliveSec: 0 };
      d.conn.forward(to, Buffer.from('HEAD:'), (result, reached) => resolve([result, reached]));
    });
    const echoed = readAll(socket);
    socket.end();
    assert.equal((await echoed).toString(), 'HEAD:hello');
    const [result, reachedService] = await ended;
    assert.equal(reachedService, true);
    assert.equal(result.error, null);
    assert.equal(result.bytesFromA, 5, 'the client bytes behind the prefix, not the prefix');
    assert.equal(result.bytesFromB, 10, 'the echo of head and bytes');
    service.server.close();
  });

  /** A start header as the white writes it: version 2, IPv4, for the service at index service. */
  function startHeader(version = 2, service = 0): Buffer {
    const header = Buffer.alloc(PREFIX);
    header[0] = version;
    header[6] = service;
    header[1] = 4;
    header.writeUInt16BE(40_000, 2);
    header.writeUInt16BE(443, 4);
    header.set([127, 0, 0, 1], 8);
    header.set([127, 0, 0, 1], 24);
    return header;
  }

  let nextTable = 1000;
  /** A dial whose table routes service 0 to the service on servicePort (service 1 has no route),
   *  up to the white side having read its preamble; pairsBefore: the engine's pairs before it. */
  async function forwardingDial(servicePort: number): Promise<{ to: Endpoint; d: Dialed; socket: Socket; pairsBefore: number }> {
    const to: Endpoint = { ip: '127.0.0.1', port: servicePort, keepAliveSec: 0 };
    const pairsBefore = testEngine()!.stats().pairs;
    const table = nextTable++;
    testEngine()!.handle.setRoutes(table, [[to.ip, to.port, 0], null]);
    const d = dial(whitePort, randomBytes(60), table);
    const socket = await nextAccepted();
    await readExactly(socket, 60);
    return { to, d, socket, pairsBefore };
  }

  it('dialed with a service, forwards the service by itself once a well-formed start header is in; JavaScript then only takes charge', async () => {
    const service = await startService();
    const { to, d, socket, pairsBefore } = await forwardingDial(service.port);
    const header = startHeader();
    socket.write(Buffer.concat([header, Buffer.from('hello')]));
    assert.deepEqual(await d.prefix, header);
    assert.equal(testEngine()!.stats().pairs - pairsBefore, 1, 'the pair existed before JavaScript heard of the header');
    // The echo comes back although JavaScript has not asked for any join.
    assert.equal((await readExactly(socket, 5)).toString(), 'hello');
    const ended = new Promise<[PairEnd, boolean]>((resolve) => d.conn.forward(to, undefined, (result, reached) => resolve([result, reached])));
    socket.end('!');
    assert.equal((await readAll(socket)).toString(), '!');
    const [result, reachedService] = await ended;
    assert.deepEqual([result.error, reachedService, result.bytesFromA, result.bytesFromB], [null, true, 6, 6]);
    service.server.close();
  });

  it('dialed with a service, leaves a malformed start header held for JavaScript, which may still join it', async () => {
    const service = await startService();
    const { to, d, socket, pairsBefore } = await forwardingDial(service.port);
    socket.write(Buffer.concat([startHeader(1), Buffer.from('hello')]));
    assert.equal((await d.prefix)[0], 1);
    assert.equal(testEngine()!.stats().pairs - pairsBefore, 0, 'nothing was forwarded');
    const ended = new Promise<PairEnd>((resolve) => d.conn.forward(to, Buffer.from('HEAD:'), (result) => resolve(result)));
    const echoed = readAll(socket);
    socket.end();
    assert.equal((await echoed).toString(), 'HEAD:hello');
    assert.equal((await ended).error, null);
    service.server.close();
  });

  it('dialed with a service table, holds a header whose service has no route (or no position) for JavaScript', async () => {
    const service = await startService();
    for (const index of [1, 2]) {
      const { to, d, socket, pairsBefore } = await forwardingDial(service.port);
      socket.write(Buffer.concat([startHeader(2, index), Buffer.from('hello')]));
      assert.equal((await d.prefix)[6], index);
      assert.equal(testEngine()!.stats().pairs - pairsBefore, 0, `service ${index} was not forwarded by the engine`);
      assert.equal(d.conn.forwardedByEngine, false);
      const ended = new Promise<PairEnd>((resolve) => d.conn.forward(to, Buffer.from('P:'), (result) => resolve(result)));
      const echoed = readAll(socket);
      socket.end();
      assert.equal((await echoed).toString(), 'P:hello');
      assert.equal((await ended).error, null);
    }
    service.server.close();
  });

  it('a service table replaced while a connection is idle routes its header by the new table', async () => {
    const first = await startService();
    const second = await startService();
    const table = nextTable++;
    testEngine()!.handle.setRoutes(table, [['127.0.0.1', first.port, 0]]);
    const d = dial(whitePort, randomBytes(60), table);
    const socket = await nextAccepted();
    await readExactly(socket, 60);
    testEngine()!.handle.setRoutes(table, [['127.0.0.1', first.port, 0], ['127.0.0.1', second.port, 0]]);
    let reached = 0;
    second.server.once('connection', () => (reached += 1));
    socket.write(Buffer.concat([startHeader(2, 1), Buffer.from('x')]));
    await d.prefix;
    assert.equal(d.conn.forwardedByEngine, true);
    assert.equal((await readExactly(socket, 1)).toString(), 'x');
    assert.equal(reached, 1, 'the second service, added after the dial, got the client');
    d.conn.destroy();
    first.server.close();
    second.server.close();
  });

  it('a forwarded connection takes no head, and destroying it resets its pair at the white and the service', async () => {
    const serviceSide: Socket[] = [];
    let serviceEnded!: (how: Promise<string>) => void;
    const serviceGone = new Promise<Promise<string>>((resolve) => (serviceEnded = resolve));
    const service = await startService((s) => {
      serviceSide.push(s);
      serviceEnded(ending(s));
    });
    const { to, d, socket } = await forwardingDial(service.port);
    socket.write(startHeader());
    await d.prefix;
    assert.throws(() => d.conn.forward(to, Buffer.from('PROXY '), () => assert.fail('not joined')), /no head can go to the service/);
    const whiteSaw = received(socket);
    const atWhite = ending(socket);
    d.conn.destroy();
    assert.equal(await atWhite, 'reset', 'destroy() is an abort');
    assert.equal(whiteSaw().length, 0);
    assert.equal(await (await serviceGone), 'reset');
    assert.equal(serviceSide.length, 1, 'the service had the one forwarded connection');
    service.server.close();
  });

  it('refuses what it cannot dial, and a join of a connection that is not yet held', async () => {
    const noop = { onConnected: () => {}, onFailed: () => {}, onPrefix: () => {}, onClosed: () => {} };
    assert.throws(() => DialedConn.dial(testEngine()!, { ip: 'localhost', port: whitePort, keepAliveSec: 0 }, randomBytes(60), PREFIX, noop), /dial needs an IP address/);
    assert.throws(() => DialedConn.dial(testEngine()!, { ip: '127.0.0.1', port: whitePort, keepAliveSec: 0 }, Buffer.alloc(0), PREFIX, noop), /bad arguments/);
    const d = dial(whitePort, randomBytes(60));
    const socket = await nextAccepted();
    await d.connected;
    // Idle: the white has not written the start header, so there is nothing to forward yet.
    assert.throws(() => d.conn.forward({ ip: '127.0.0.1', port: whitePort, keepAliveSec: 0 }, undefined, () => assert.fail('no pair')), /is idle, not held/);
    const gone = ending(socket);
    d.conn.destroy();
    assert.equal(await gone, 'reset');
  });

  it('a dial nobody answers is reported as failed with its errno, and the engine holds nothing', async () => {
    const before = testEngine()!.stats().conns;
    const d = dial(await closedPort(), randomBytes(60));
    const error = (await d.failed) as NodeJS.ErrnoException;
    assert.equal(error.code, 'ECONNREFUSED');
    assert.equal(error.syscall, 'connect');
    assert.equal(testEngine()!.stats().conns, before);
  });

  it('an idle connection the white closes is reported closed; destroy closes one at the white', async () => {
    const first = dial(whitePort, randomBytes(60));
    const firstAtWhite = await nextAccepted();
    await first.connected;
    firstAtWhite.end();
    await first.closed;

    const second = dial(whitePort, randomBytes(60));
    const secondAtWhite = await nextAccepted();
    await second.connected;
    const got = received(secondAtWhite);
    const gone = ending(secondAtWhite);
    second.conn.destroy();
    assert.equal(await gone, 'reset');
    assert.equal(got().length, 60, 'only the preamble was sent before the close');
  });

  it('a service that refuses ends the pair with its errno, flagged as never reached, and resets the data connection', async () => {
    const d = dial(whitePort, randomBytes(60));
    const socket = await nextAccepted();
    await readExactly(socket, 60);
    socket.write(randomBytes(PREFIX));
    await d.prefix;
    const whiteGot = received(socket);
    const endedAtWhite = ending(socket);
    const to: Endpoint = { ip: '127.0.0.1', port: await closedPort(), keepAliveSec: 0 };
    const [result, reachedService] = await new Promise<[PairEnd, boolean]>((resolve) => d.conn.forward(to, undefined, (r, reached) => resolve([r, reached])));
    assert.equal(reachedService, false);
    assert.equal((result.error as NodeJS.ErrnoException | null)?.code, 'ECONNREFUSED');
    assert.equal(await endedAtWhite, 'reset', 'the white must hear a refusal, not an empty answer');
    assert.equal(whiteGot().length, 0);
  });

  // The service's accept queue is full, so its SYN is dropped and the connect stays in SYN-SENT
  // until the retransmission about a second later. A FIN passed on in SYN-SENT would abort it.
  it('a client FIN that comes while the service is still connecting waits, and the service still answers', { timeout: 20_000 }, async () => {
    const child = spawn('python3', ['-c', SLOW_SERVICE], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const port = Number((await readLine(child.stdout)).trim());
      // Fill the accept queue: with backlog 0 it holds one connection, and the next SYN is dropped.
      const filler = await connectOnly(port);
      const d = dial(whitePort, randomBytes(60));
      const socket = await nextAccepted();
      await readExactly(socket, 60);
      socket.end(randomBytes(PREFIX)); // the header, then at once the client's FIN
      await d.prefix;
      const answer = readAll(socket);
      const ended = new Promise<[PairEnd, boolean]>((resolve) => d.conn.forward({ ip: '127.0.0.1', port, keepAliveSec: 0 }, undefined, (r, reached) => resolve([r, reached])));
      child.stdin.write('accept\n'); // the service starts accepting: the retransmitted SYN gets in
      assert.equal((await answer).toString(), 'banner:eof');
      const [result, reachedService] = await ended;
      assert.equal(result.error, null);
      assert.equal(reachedService, true);
      filler.destroy();
    } finally {
      child.kill();
    }
  });
});

// Listens with backlog 0 and accepts nothing until told; then, for each connection: sends
// "banner:", reads to the end, and answers "eof" before closing (the filler gets the same).
const SLOW_SERVICE = `
import socket, sys, threading
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen(0)
print(s.getsockname()[1], flush=True)
sys.stdin.readline()
def serve(c):
    try:
        c.sendall(b'banner:')
        while c.recv(4096):
            pass
        c.sendall(b'eof')
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

function readLine(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const onData = (chunk: Buffer): void => {
      text += chunk.toString();
      if (!text.includes('\n')) return;
      stream.off('data', onData);
      resolve(text.slice(0, text.indexOf('\n')));
    };
    stream.on('data', onData);
  });
}

function connectOnly(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  });
}
