// A gray written from the protocol primitives, for tests that need to misbehave on purpose:
// it logs in like a real gray (so it knows the session's data key) and then lets a test craft
// data-connection preambles by hand — replayed, beyond the credits, from another address, for
// an ended session.
import net from 'node:net';
import tls from 'node:tls';
import { deriveSessionKeys, decodeProof, encodeProof, proofsEqual } from '../../src/engine/protocol/auth.js';
import { FrameDecoder } from '../../src/engine/protocol/frames.js';
import { decodeMessage, encodeMessage, MessageType, type Message } from '../../src/engine/protocol/messages.js';
import { encodePreface } from '../../src/engine/protocol/constants.js';
import { encodePreamble, sessionIdFromString } from '../../src/engine/protocol/preamble.js';
import { tlsSessionBinding } from '../../src/engine/tls-binding.js';

export interface RawSession {
  readonly socket: tls.TLSSocket;
  readonly sessionId: Buffer;
  readonly dataKey: Buffer;
  readonly dataPort: number;
  readonly credits: number;
  /** Messages received after WELCOME (GRANTs, PINGs, BYE). */
  readonly received: Message[];
  preamble(counter: number): Buffer;
}

export function rawTlsConnect(port: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Reads validated messages from a TLS socket that has already been sent the preface. */
export function messageReader(socket: tls.TLSSocket, maxPayloadBytes = 64 * 1024) {
  const decoder = new FrameDecoder({ maxPayloadBytes, expectPreface: true });
  const queue: Message[] = [];
  const waiters: Array<(m: Message | null) => void> = [];
  let ended = false;
  let sink: Message[] | null = null;
  socket.on('data', (chunk: Buffer) => {
    for (const frame of decoder.push(chunk)) {
      const m = decodeMessage(frame);
      const w = waiters.shift();
      if (w) w(m);
      else (sink ?? queue).push(m);
    }
  });
  socket.on('close', () => {
    ended = true;
    for (const w of waiters.splice(0)) w(null);
  });
  return {
    next(): Promise<Message | null> {
      const m = queue.shift();
      if (m) return Promise.resolve(m);
      if (ended) return Promise.resolve(null);
      return new Promise((resolve) => waiters.push(resolve));
    },
    /** From now on every message goes to `into` (after what is already queued). */
    drainTo(into: Message[]): void {
      into.push(...queue.splice(0));
      sink = into;
    },
  };
}

/** services: the table the raw gray announces (SERVICES); by default the white's names, in its
 *  order; null: none yet (the test sends it). reuse: HELLO offers framed data connections. */
export async function rawLogin(controlPort: number, id: string, secret: Buffer, pool = 2, services?: string | null, reuse = 0): Promise<RawSession> {
  const socket = await rawTlsConnect(controlPort);
  const reader = messageReader(socket);
  socket.write(encodePreface());
  socket.write(encodeMessage({ type: MessageType.HELLO, id, pool, reuse, agent: 'raw-test' }));
  const whiteProof = await reader.next();
  if (!whiteProof || whiteProof.type !== MessageType.WHITE_PROOF) throw new Error(`expected WHITE_PROOF, got ${JSON.stringify(whiteProof)}`);
  const keys = deriveSessionKeys(secret, tlsSessionBinding(socket), id);
  if (!proofsEqual(keys.whiteProof, decodeProof(whiteProof.proof))) throw new Error('white proof invalid');
  socket.write(encodeMessage({ type: MessageType.GRAY_PROOF, proof: encodeProof(keys.grayProof) }));
  const welcome = await reader.next();
  if (!welcome || welcome.type !== MessageType.WELCOME) throw new Error(`expected WELCOME, got ${JSON.stringify(welcome)}`);
  if (services !== null) socket.write(encodeMessage({ type: MessageType.SERVICES, services: services ?? welcome.services }));
  const sessionId = sessionIdFromString(welcome.session);
  const received: Message[] = [];
  reader.drainTo(received);
  return {
    socket,
    sessionId,
    dataKey: keys.dataKey,
    dataPort: welcome.dataPort,
    credits: welcome.credits,
    received,
    preamble: (counter) => encodePreamble(sessionId, counter, keys.dataKey),
  };
}

/** Opens a data connection (optionally from another loopback address) and sends `bytes`. */
export function sendOnDataPort(port: number, bytes: Buffer, localAddress?: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) }, () => {
      socket.write(bytes);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}
