// Shared tools for the hardening tests (test/hardening/) and the soak run (test/soak/run.ts):
// a logger that keeps its lines for assertions, a paced echo transfer with SHA-256 on both
// directions, /proc readings of another process, heap readings after a forced GC, and raw
// control-port clients that can send anything at all. (node --test also loads this file as a
// test file; it defines no tests and has no side effects, so it is one empty, passing entry.)
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import v8 from 'node:v8';
import vm from 'node:vm';
import { pino } from 'pino';
import type { Logger } from '../../src/log.js';
import { encodePreface } from '../../src/engine/protocol/constants.js';
import { FrameDecoder } from '../../src/engine/protocol/frames.js';
import { decodeMessage, encodeMessage, MessageType, type Message } from '../../src/engine/protocol/messages.js';
import { deriveSessionKeys, decodeProof, encodeProof, proofsEqual } from '../../src/engine/protocol/auth.js';
import { encodePreamble, sessionIdFromString } from '../../src/engine/protocol/preamble.js';
import { tlsSessionBinding } from '../../src/engine/tls-binding.js';

export type LogLine = Record<string, unknown> & { msg?: string; code?: string };

// ---------------------------------------------------------------------------------------------
// Waiting

/** Bounded polling for a condition that has no event of its own (a counter in a snapshot, a
 *  number read from /proc). Never used where an event exists. */
export async function waitUntil(condition: () => boolean, what: string, timeoutMs = 5000, stepMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Rejects after timeoutMs with a message naming what was awaited. */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs))),
  ]);
}

// ---------------------------------------------------------------------------------------------
// Logs

export interface CapturedLogger {
  readonly logger: Logger;
  readonly lines: LogLine[];
  /** First line (past or future) matching; rejects after timeoutMs. */
  waitFor(match: (l: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>;
}

/** A pino logger whose JSON lines are parsed and kept, for asserting on what the engine logs. */
export function captureLogger(level = 'info'): CapturedLogger {
  const lines: LogLine[] = [];
  const waiters: Array<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];
  const destination = {
    write(text: string): void {
      for (const raw of text.split('\n')) {
        if (raw.trim() === '') continue;
        const line = JSON.parse(raw) as LogLine;
        lines.push(line);
        for (let i = waiters.length - 1; i >= 0; i--) {
          const w = waiters[i]!;
          if (w.match(line)) {
            waiters.splice(i, 1);
            w.resolve(line);
          }
        }
      }
    },
  };
  const logger = pino({ level, base: null }, destination as unknown as pino.DestinationStream);
  return {
    logger,
    lines,
    waitFor(match, what, timeoutMs = 5000) {
      const seen = lines.find(match);
      if (seen) return Promise.resolve(seen);
      return within(new Promise<LogLine>((resolve) => waiters.push({ match, resolve })), timeoutMs, `log line: ${what}`);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Memory and descriptors

let gcFunction: (() => void) | null = null;

/** process.memoryUsage() after two full GCs, so deltas measure what is really retained. */
export function settledMemory(): NodeJS.MemoryUsage {
  if (!gcFunction) {
    v8.setFlagsFromString('--expose-gc');
    gcFunction = vm.runInNewContext('gc') as () => void;
  }
  gcFunction();
  gcFunction();
  return process.memoryUsage();
}

/** JS heap plus buffers outside it: what a connection's user-space state costs. */
export function retainedBytes(m: NodeJS.MemoryUsage = settledMemory()): number {
  return m.heapUsed + m.external;
}

/** Resident set size and open descriptors of another process, from /proc (Linux). */
export function procStats(pid: number): { rssBytes: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return { rssBytes: Number(match[1]) * 1024, fds: readdirSync(`/proc/${pid}/fd`).length };
}

export const MiB = 1024 * 1024;

export function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

// ---------------------------------------------------------------------------------------------
// A legitimate client running while the attack goes on

const PATTERN = randomBytes(1 << 20);

export interface TransferResult {
  readonly sentBytes: number;
  readonly receivedBytes: number;
  readonly intact: boolean;
  readonly sent: string;
  readonly received: string;
}

/**
 * A paced echo transfer: writes a chunk every few milliseconds (bounded by what is still
 * unechoed, so it never floods the loop it shares with the server under test), hashes what it
 * sent and what came back. finish() half-closes and waits for the echo's end.
 */
export class LiveTransfer {
  private readonly sentHash = createHash('sha256');
  private readonly receivedHash = createHash('sha256');
  private sentBytes = 0;
  private receivedBytes = 0;
  private n = 0;
  private timer: NodeJS.Timeout | null = null;
  private failure: Error | null = null;
  private readonly ended: Promise<void>;

  private constructor(
    private readonly socket: net.Socket,
    private readonly chunkBytes: number,
    everyMs: number,
  ) {
    this.ended = new Promise<void>((resolve, reject) => {
      socket.on('end', () => resolve());
      socket.on('error', (err) => {
        this.failure = err;
        reject(err);
      });
      socket.on('close', () => resolve());
    });
    this.ended.catch(() => {});
    socket.on('data', (c: Buffer) => {
      this.receivedHash.update(c);
      this.receivedBytes += c.length;
    });
    this.timer = setInterval(() => this.pump(), everyMs);
  }

  static start(port: number, options: { chunkBytes?: number; everyMs?: number; host?: string } = {}): Promise<LiveTransfer> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: options.host ?? '127.0.0.1', port, allowHalfOpen: true }, () => {
        socket.off('error', reject);
        resolve(new LiveTransfer(socket, options.chunkBytes ?? 16 * 1024, options.everyMs ?? 5));
      });
      socket.once('error', reject);
    });
  }

  get received(): number {
    return this.receivedBytes;
  }

  /** Resolves once at least `bytes` more have come back (proof that the pair is moving now). */
  async progressed(bytes = 64 * 1024, timeoutMs = 10_000): Promise<void> {
    const target = this.receivedBytes + bytes;
    await waitUntil(() => this.receivedBytes >= target || this.failure !== null, `the live transfer to echo ${bytes} more bytes`, timeoutMs, 5);
    if (this.failure) throw this.failure;
  }

  private pump(): void {
    if (this.socket.destroyed || this.sentBytes - this.receivedBytes > 512 * 1024) return;
    const offset = (this.n++ * 7919 * 61) % (PATTERN.length - this.chunkBytes);
    const piece = PATTERN.subarray(offset, offset + this.chunkBytes);
    this.sentHash.update(piece);
    this.sentBytes += piece.length;
    this.socket.write(piece);
  }

  async finish(timeoutMs = 20_000): Promise<TransferResult> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.socket.end();
    await within(this.ended, timeoutMs, 'the live transfer to end');
    this.socket.destroy();
    if (this.failure) throw this.failure;
    const sent = this.sentHash.digest('hex');
    const received = this.receivedHash.digest('hex');
    return { sentBytes: this.sentBytes, receivedBytes: this.receivedBytes, intact: sent === received && this.sentBytes === this.receivedBytes, sent, received };
  }

  destroy(): void {
    if (this.timer) clearInterval(this.timer);
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Raw clients

/** Resolves when the peer closes the socket (FIN or reset), with how long that took from
 *  `since`. Reads and discards whatever arrives. */
/** Resolves with the first `n` bytes a socket receives (e.g. the start header on a paired data
 *  connection); rejects if it closes first. */
export function firstBytes(socket: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      got = Buffer.concat([got, c]);
      if (got.length >= n) {
        socket.off('data', onData);
        resolve(got);
      }
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`closed after ${got.length} bytes`)));
  });
}

export function closeTime(socket: net.Socket, since = Date.now()): Promise<number> {
  return new Promise((resolve) => {
    const done = (): void => resolve(Date.now() - since);
    socket.on('error', () => {});
    if (socket.destroyed) return done();
    socket.once('end', done);
    socket.once('close', done);
    socket.resume();
  });
}

export function tcpConnect(port: number, localAddress?: string, host = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      // Connected, then refused with a reset before Node reported the connect (relay resets a
      // client it cannot serve): the socket is given as it is, already closed.
      if (err.code === 'ECONNRESET') resolve(socket);
      else reject(err);
    };
    const socket = net.connect({ host, port, ...(localAddress ? { localAddress } : {}) }, () => {
      socket.off('error', onError);
      socket.on('error', () => {});
      resolve(socket);
    });
    socket.once('error', onError);
  });
}

/** A TLS connection attempt: the socket once the handshake is done, or null if the server
 *  closed the connection first (refused before TLS, or a failed handshake). */
export function tlsAttempt(port: number, localAddress?: string, extra: tls.ConnectionOptions = {}): Promise<tls.TLSSocket | null> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3', ...(localAddress ? { localAddress } : {}), ...extra }, () => resolve(socket));
    socket.on('error', () => {
      socket.destroy();
      resolve(null);
    });
    socket.once('close', () => resolve(null));
  });
}

/** The first bytes a TLS 1.3 client sends (its ClientHello), captured from a local listener. */
export async function captureClientHello(): Promise<Buffer> {
  let release: (b: Buffer) => void = () => {};
  const got = new Promise<Buffer>((r) => (release = r));
  const server = net.createServer((s) => {
    s.once('data', (b: Buffer) => {
      release(b);
      s.destroy();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  client.on('error', () => {});
  const hello = await got;
  client.destroy();
  server.close();
  return hello;
}

/** Frame bytes built by hand: any type, any payload, any declared length (the length field may
 *  lie about what follows). */
export function frameBytes(type: number, payload: Buffer | string, declaredLength?: number): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const header = Buffer.alloc(6);
  header.writeUInt32BE(declaredLength ?? body.length, 0);
  header[4] = type;
  header[5] = 0;
  return Buffer.concat([header, body]);
}

/**
 * One TLS control connection driven by a test: send anything, read every message the white
 * sends (its preface included), learn the BYE code and when the connection closed.
 */
export class ControlProbe {
  readonly messages: Message[] = [];
  /** Set when the white sent something our decoder refuses (it never should). */
  decodeError: unknown = null;
  closedAt: number | null = null;
  readonly closed: Promise<void>;
  private readonly waiters: Array<() => void> = [];

  private constructor(readonly socket: tls.TLSSocket) {
    const decoder = new FrameDecoder({ maxPayloadBytes: 64 * 1024, expectPreface: true });
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const frame of decoder.push(chunk)) this.messages.push(decodeMessage(frame));
      } catch (err) {
        this.decodeError ??= err;
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => {
      socket.on('error', () => {});
      socket.once('close', () => {
        this.closedAt = Date.now();
        for (const w of this.waiters.splice(0)) w();
        resolve();
      });
    });
  }

  static async open(port: number, localAddress?: string): Promise<ControlProbe> {
    const socket = await tlsAttempt(port, localAddress);
    if (!socket) throw new Error(`TLS to ${port} from ${localAddress ?? 'default'} was refused`);
    return new ControlProbe(socket);
  }

  send(bytes: Buffer | Message): void {
    this.socket.write(Buffer.isBuffer(bytes) ? bytes : encodeMessage(bytes));
  }

  preface(): void {
    this.socket.write(encodePreface());
  }

  /** Resolves with the first message matching; rejects if the connection closes without it. */
  next(match: (m: Message) => boolean, timeoutMs = 5000): Promise<Message> {
    return within(
      new Promise<Message>((resolve, reject) => {
        const check = (): void => {
          const m = this.messages.find(match);
          if (m) return resolve(m);
          if (this.closedAt !== null) return reject(new Error(`closed without the expected message; got ${JSON.stringify(this.messages)}`));
          this.waiters.push(check);
        };
        check();
      }),
      timeoutMs,
      'a control message',
    );
  }

  /** Waits for the close and returns the BYE code the white sent before it (null if none). */
  async byeCode(timeoutMs = 5000): Promise<string | null> {
    await within(this.closed, timeoutMs, 'the control connection to close');
    const bye = this.messages.find((m) => m.type === MessageType.BYE);
    return bye && bye.type === MessageType.BYE ? bye.code : null;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export interface RawLogin {
  readonly probe: ControlProbe;
  readonly welcome: Extract<Message, { type: typeof MessageType.WELCOME }>;
  readonly dataKey: Buffer;
  readonly sessionId: Buffer;
  preamble(counter: number): Buffer;
}

/** Logs in as a gray from the protocol primitives (optionally from another loopback address). */
export async function loginRaw(port: number, id: string, secret: Buffer, pool: number, localAddress?: string): Promise<RawLogin> {
  const probe = await ControlProbe.open(port, localAddress);
  probe.preface();
  probe.send({ type: MessageType.HELLO, id, pool, reuse: 0, agent: 'hardening-test' });
  const proof = await probe.next((m) => m.type === MessageType.WHITE_PROOF);
  const keys = deriveSessionKeys(secret, tlsSessionBinding(probe.socket), id);
  if (proof.type !== MessageType.WHITE_PROOF || !proofsEqual(keys.whiteProof, decodeProof(proof.proof))) throw new Error('white proof invalid');
  probe.send({ type: MessageType.GRAY_PROOF, proof: encodeProof(keys.grayProof) });
  const welcome = await probe.next((m) => m.type === MessageType.WELCOME);
  if (welcome.type !== MessageType.WELCOME) throw new Error('no WELCOME');
  // As a gray does: its service table follows WELCOME (here, the white's names in its order).
  probe.send({ type: MessageType.SERVICES, services: welcome.services });
  const sessionId = sessionIdFromString(welcome.session);
  return { probe, welcome, dataKey: keys.dataKey, sessionId, preamble: (counter) => encodePreamble(sessionId, counter, keys.dataKey) };
}

/** Largest `up_to` among the GRANTs a raw session has received so far (0 if none). */
export function highestGrant(messages: readonly Message[]): number {
  let max = 0;
  for (const m of messages) if (m.type === MessageType.GRANT && m.upTo > max) max = m.upTo;
  return max;
}

// ---------------------------------------------------------------------------------------------
// A TCP relay that can freeze: the network path of a half-open connection

/**
 * Forwards TCP from its port to `target` and can be frozen: while frozen, nothing is forwarded
 * either way and nothing is closed, exactly like a path that silently drops packets. New
 * connections made while frozen are held too.
 */
export class FreezableProxy {
  private frozen = false;
  private readonly held = new Set<() => void>();
  private readonly sockets = new Set<net.Socket>();
  private readonly server: net.Server;
  port = 0;

  constructor(private readonly target: number) {
    this.server = net.createServer({ pauseOnConnect: true }, (inbound) => {
      this.sockets.add(inbound);
      inbound.on('error', () => inbound.destroy());
      inbound.once('close', () => this.sockets.delete(inbound));
      const outbound = net.connect({ host: '127.0.0.1', port: this.target });
      this.sockets.add(outbound);
      outbound.on('error', () => outbound.destroy());
      outbound.once('close', () => this.sockets.delete(outbound));
      inbound.once('close', () => outbound.destroy());
      outbound.once('close', () => inbound.destroy());
      const forward = (from: net.Socket, to: net.Socket): void => {
        from.on('data', (chunk: Buffer) => {
          if (this.frozen) {
            // Keep the bytes but stop reading: they are delivered (late) only after a thaw.
            from.pause();
            this.held.add(() => {
              to.write(chunk);
              from.resume();
            });
            return;
          }
          to.write(chunk);
        });
      };
      forward(inbound, outbound);
      forward(outbound, inbound);
      inbound.resume();
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  freeze(): void {
    this.frozen = true;
    for (const s of this.sockets) s.pause();
  }

  thaw(): void {
    this.frozen = false;
    for (const s of this.sockets) s.resume();
    for (const release of [...this.held]) release();
    this.held.clear();
  }

  close(): void {
    this.server.close();
    for (const s of this.sockets) s.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// The local service behind a gray in fault tests

export const FIREHOSE_BYTES = 200 * MiB;

/** The local service: echoes, except a client whose first bytes are "FIRE" gets FIREHOSE_BYTES
 *  written as fast as the tunnel takes them (backpressure respected), then EOF. */
export class TestService {
  server: net.Server | null = null;
  firehose: { written: number; drains: number; digest: Promise<string> } | null = null;
  constructor(public port = 0) {}

  async start(): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('error', () => socket.destroy());
      let started = false;
      socket.once('end', () => !started && socket.end()); // FIN before any byte: answer with FIN
      socket.once('data', (first: Buffer) => {
        started = true;
        if (first.subarray(0, 4).toString() === 'FIRE') return this.fire(socket);
        socket.write(first);
        socket.pipe(socket);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  /** Stop listening (new connections are refused); established ones continue. */
  stop(): void {
    this.server?.close();
    this.server = null;
  }

  private fire(socket: net.Socket): void {
    const hash = createHash('sha256');
    const block = randomBytes(256 * 1024);
    let resolveDigest: (d: string) => void = () => {};
    const state = { written: 0, drains: 0, digest: new Promise<string>((r) => (resolveDigest = r)) };
    this.firehose = state;
    const pump = (): void => {
      while (state.written < FIREHOSE_BYTES) {
        const piece = block.subarray(0, Math.min(block.length, FIREHOSE_BYTES - state.written));
        block[0] = (block[0]! + 1) & 0xff; // no two blocks alike
        hash.update(piece);
        state.written += piece.length;
        if (!socket.write(piece)) {
          socket.once('drain', () => {
            state.drains += 1;
            pump();
          });
          return;
        }
      }
      socket.end();
      resolveDigest(hash.digest('hex'));
    };
    pump();
  }
}

/** Lets a paused socket read about one chunk every 10 ms (a slow reader) for `ms`, or until
 *  `enough()`; the caller's 'data' listener sees the bytes. Leaves the socket paused. */
export async function readSlowly(socket: net.Socket, ms: number, enough: () => boolean): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until && !enough()) {
    socket.resume();
    await new Promise((r) => setImmediate(r));
    socket.pause();
    await new Promise((r) => setTimeout(r, 10));
  }
}
