// Framed data connections (native/engine.h, Framing), from the gray's side of the wire: a gray
// written by hand (helpers/raw-gray.ts) offers reuse in its HELLO, and this test reads and writes
// the frames itself, so it holds the white's engine to the protocol byte by byte: the framed start
// header and its credit flag, frames both ways, END for a FIN, the connection back in the pool
// for the next client, and what a gray that breaks the framing gets.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ErrorCodes } from '../../src/errors.js';
import { MessageType } from '../../src/engine/protocol/messages.js';
import { START_HEADER_BYTES, START_HEADER_CREDIT, START_HEADER_VERSION, START_HEADER_VERSION_FRAMED, decodeStartHeader } from '../../src/engine/protocol/start-header.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { silentLogger } from '../../src/log.js';
import { ending, whiteConfigFor } from '../helpers/tunnel.js';
import { engineDataPlane, noEngine } from '../helpers/data-plane.js';
import { rawLogin, sendOnDataPort, type RawSession } from '../helpers/raw-gray.js';
import { waitUntil } from '../soak/support.js';

/** Reads a socket's bytes in order, exactly as many as asked. */
class Reader {
  private buffered = Buffer.alloc(0);
  private wanted: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private closed = false;

  constructor(socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.serve();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.wanted?.reject(new Error(`closed with ${this.buffered.length} bytes unread`));
      this.wanted = null;
    });
  }

  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.wanted = { n, resolve, reject };
      this.serve();
      if (this.wanted && this.closed) reject(new Error(`closed with ${this.buffered.length} bytes unread`));
    });
  }

  /** A frame's length, then its payload (null for END). */
  async frame(): Promise<Buffer | null> {
    const length = (await this.read(4)).readUInt32BE(0);
    return length === 0 ? null : this.read(length);
  }

  private serve(): void {
    if (!this.wanted || this.buffered.length < this.wanted.n) return;
    const out = this.buffered.subarray(0, this.wanted.n);
    this.buffered = this.buffered.subarray(this.wanted.n);
    const { resolve } = this.wanted;
    this.wanted = null;
    resolve(out);
  }
}

const frame = (payload: Buffer | string): Buffer => {
  const bytes = Buffer.from(payload);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
};
const END = Buffer.alloc(4);

/** A client that sends text, half-closes, and collects the answer up to the white's FIN. */
function client(port: number, text: string): { socket: net.Socket; answer: Promise<string> } {
  const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  socket.end(text);
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const answer = new Promise<string>((resolve, reject) => {
    socket.on('end', () => {
      socket.end();
      resolve(Buffer.concat(chunks).toString());
    });
    socket.on('error', reject);
  });
  return { socket, answer };
}

describe('framed data connections (engine white, gray by hand)', { skip: noEngine() }, () => {
  const secret = randomBytes(32);
  let white: WhiteServer;
  let publicPort: number;
  let session: RawSession | null = null;

  before(async () => {
    // One engine thread: the pool's order (the newest idle connection first) is one thread's.
    white = new WhiteServer(whiteConfigFor([{ id: 'raw', secret, publicPort: 0, dataPort: 0 }]), { dataPlane: engineDataPlane(), logger: silentLogger() });
    await white.start();
    publicPort = white.portsOf('raw')!.publicPort;
  });
  after(async () => {
    session?.socket.destroy();
    await white.stop(100);
  });

  const gray = () => white.snapshot().grays.find((g) => g.id === 'raw')!;

  /** A new session of the gray by hand (replacing the last), and its first data connection idle. */
  async function login(pool: number, reuse: number): Promise<{ s: RawSession; data: net.Socket; wire: Reader }> {
    session?.socket.destroy();
    const s = (session = await rawLogin(white.controlPort, 'raw', secret, pool, undefined, reuse));
    const data = await sendOnDataPort(s.dataPort, s.preamble(1));
    const wire = new Reader(data);
    await waitUntil(() => gray().connected && gray().poolIdle === 1, 'the connection is idle');
    return { s, data, wire };
  }

  it('frames both ways, ends with END, and carries the next client on the same connection', async () => {
    // A pool of 2 is refilled below 1 idle connection (GraySession.refillLevel).
    const { s, data, wire } = await login(2, 1);
    assert.equal(s.credits, 2);

    const first = client(publicPort, 'hello');
    const header = await wire.read(START_HEADER_BYTES);
    assert.equal(header[0], START_HEADER_VERSION_FRAMED);
    assert.equal(header[7], START_HEADER_CREDIT, 'the pool fell below its refill level: the join is a credit');
    assert.equal(decodeStartHeader(header, true).dstPort, publicPort);
    assert.throws(() => decodeStartHeader(header), /version 3 is not supported, expected 2/);
    assert.equal((await wire.frame())?.toString(), 'hello');
    assert.equal(await wire.frame(), null, "the client's FIN comes as END");
    // A second connection arrives before the first is back.
    const second = await sendOnDataPort(s.dataPort, s.preamble(2));
    await waitUntil(() => gray().poolIdle === 1, 'the second connection is idle');
    data.write(Buffer.concat([frame('wor'), frame('ld'), END]));
    assert.equal(await first.answer, 'world', 'frames arrive as one stream, END as a FIN');
    await waitUntil(() => gray().dataConnectionsReused === 1 && gray().poolIdle === 2, 'the first connection is back in the pool');

    // The newest idle connection is the one that came back; one stays idle without it, so this
    // join is no credit.
    const next = client(publicPort, 'again');
    const again = await wire.read(START_HEADER_BYTES);
    assert.equal(again[0], START_HEADER_VERSION_FRAMED);
    assert.equal(again[7], 0, 'the pool was at its refill level: no credit');
    assert.equal((await wire.frame())?.toString(), 'again');
    assert.equal(await wire.frame(), null);
    data.write(Buffer.concat([frame('twice'), END]));
    assert.equal(await next.answer, 'twice');
    await waitUntil(() => gray().dataConnectionsReused === 2 && gray().poolIdle === 2, 'it is back again');
    assert.equal(gray().clientsTotal, 2);

    // Credits: WELCOME's two and the first join's; the second join gave none, so counter 4 is
    // refused, and the pool, at its target, asked for no GRANT.
    await sendOnDataPort(s.dataPort, s.preamble(4)).then((c) => ending(c));
    await waitUntil(() => (white.snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_NO_CREDIT] ?? 0) === 1, 'PREAMBLE_NO_CREDIT to be counted');
    assert.ok(!s.received.some((m) => m.type === MessageType.GRANT));
    second.destroy();
  });

  it('a gray that never offered reuse gets raw data connections', async () => {
    const { data, wire } = await login(1, 0);
    const c = client(publicPort, 'plain');
    const header = await wire.read(START_HEADER_BYTES);
    assert.equal(header[0], START_HEADER_VERSION);
    assert.equal((await wire.read(5)).toString(), 'plain');
    data.end('raw');
    assert.equal(await c.answer, 'raw');
  });

  it('resets the client when the data connection ends inside a frame, and drops one that speaks after END', async () => {
    const { s, data: cut, wire: cutWire } = await login(2, 1);
    const socket = net.connect({ host: '127.0.0.1', port: publicPort, allowHalfOpen: true });
    const how = ending(socket);
    socket.write('x');
    await cutWire.read(START_HEADER_BYTES);
    // 100 bytes announced, 10 sent, then the connection ends with a FIN: a raw pair would pass
    // the FIN on, but the stream is cut, so the client hears a reset.
    cut.end(Buffer.concat([Buffer.from([0, 0, 0, 100]), Buffer.alloc(10, 1)]));
    assert.equal(await how, 'reset');

    // A connection whose exchange ended must stay silent in the pool: a byte from it closes it.
    const chatty = await sendOnDataPort(s.dataPort, s.preamble(2));
    const chattyWire = new Reader(chatty);
    await waitUntil(() => gray().poolIdle >= 1, 'the connection is idle');
    const c = client(publicPort, 'q');
    await chattyWire.read(START_HEADER_BYTES);
    assert.equal((await chattyWire.frame())?.toString(), 'q');
    assert.equal(await chattyWire.frame(), null);
    const reused = gray().dataConnectionsReused;
    chatty.write(Buffer.concat([frame('a'), END]));
    assert.equal(await c.answer, 'a');
    await waitUntil(() => gray().dataConnectionsReused === reused + 1, 'it is back in the pool');
    // Bytes behind END in the same read are a violation too (the gray must wait for a start
    // header): the pair is aborted, its client reset.
    const violating = await sendOnDataPort(s.dataPort, s.preamble(3));
    const violatingWire = new Reader(violating);
    await waitUntil(() => gray().poolIdle >= 2, 'the third connection is idle');
    const victim = net.connect({ host: '127.0.0.1', port: publicPort, allowHalfOpen: true });
    const victimEnd = ending(victim);
    victim.write('y');
    // The newest idle connection is the third.
    await violatingWire.read(START_HEADER_BYTES);
    violating.write(Buffer.concat([frame('z'), END, Buffer.from('junk')]));
    assert.equal(await victimEnd, 'reset');

    const invalid = (): number => white.snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_INVALID] ?? 0;
    const invalidBefore = invalid();
    const idleBefore = gray().poolIdle;
    const closed = ending(chatty);
    chatty.write('junk');
    assert.equal(await closed, 'reset');
    await waitUntil(() => invalid() === invalidBefore + 1 && gray().poolIdle === idleBefore - 1, 'the chatty connection is refused and out of the pool');
  });
});
