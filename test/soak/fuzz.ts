// A time-budgeted fuzz of every decoder that reads bytes from a peer: FrameDecoder,
// decodeMessage, PreambleReader, parsePreamble, decodeStartHeader. Inputs are random bytes and,
// more usefully, valid encodings with random damage (flipped bits, cuts, insertions, lying
// lengths), fed in random chunkings. The rule checked: a decoder either succeeds or throws a
// RelayError with one of its own peer-input codes; never another exception, never INTERNAL
// (which the decoders use to wrap an unexpected exception), never a hang. Whatever decodes must
// re-encode to the same thing (the decoders accept exactly one encoding per value).
//
// runFuzz() runs in the calling thread; fuzzInWorker() runs it in a worker thread under a
// watchdog, so a decoder stuck in a loop fails the run instead of hanging it. (node --test also
// loads this file as a test file: on the main thread, importing it does nothing.)
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { ErrorCodes, RelayError, type ErrorCode } from '../../src/errors.js';
import { encodePreface } from '../../src/engine/protocol/constants.js';
import { FrameDecoder } from '../../src/engine/protocol/frames.js';
import { decodeMessage, encodeMessage, MessageType, type Message } from '../../src/engine/protocol/messages.js';
import { encodePreamble, parsePreamble, PREAMBLE_BYTES, PreambleReader } from '../../src/engine/protocol/preamble.js';
import { decodeStartHeader, encodeStartHeader, START_HEADER_BYTES } from '../../src/engine/protocol/start-header.js';

export interface FuzzReport {
  readonly seed: number;
  readonly elapsedMs: number;
  readonly inputs: number;
  readonly perTarget: Record<string, number>;
  /** Inputs that broke the rule (first few, hex), with what happened. */
  readonly failures: string[];
}

/** mulberry32: small, fast, seedable; a failure can be replayed from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Gen {
  constructor(readonly rand: () => number) {}
  int(maxExclusive: number): number {
    return Math.floor(this.rand() * maxExclusive);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  /** Random chunking: the cut points a socket might have delivered. */
  split(buf: Buffer): Buffer[] {
    const chunks: Buffer[] = [];
    let at = 0;
    while (at < buf.length) {
      const n = this.rand() < 0.3 ? 1 : 1 + this.int(Math.max(1, buf.length - at));
      chunks.push(Buffer.from(buf.subarray(at, at + n)));
      at += n;
    }
    if (this.rand() < 0.1) chunks.splice(this.int(chunks.length + 1), 0, Buffer.alloc(0));
    return chunks;
  }
  /** Damage: flip bits, overwrite, cut, insert, duplicate a slice, or lie in a length field. */
  mutate(input: Buffer): Buffer {
    let buf = Buffer.from(input);
    const rounds = 1 + this.int(4);
    for (let r = 0; r < rounds; r++) {
      const at = this.int(buf.length + 1);
      switch (this.int(7)) {
        case 0:
          if (buf.length > 0) buf[at % buf.length]! ^= 1 << this.int(8);
          break;
        case 1:
          if (buf.length > 0) buf[at % buf.length] = this.pick([0, 0xff, 0x7f, 0x80, 0x22, 0x5c, 0x7b, 0x7d, this.int(256)]);
          break;
        case 2:
          buf = buf.subarray(0, at);
          break;
        case 3:
          buf = Buffer.concat([buf.subarray(0, at), this.bytes(1 + this.int(8)), buf.subarray(at)]);
          break;
        case 4: {
          const from = this.int(buf.length + 1);
          buf = Buffer.concat([buf.subarray(0, at), buf.subarray(from, from + this.int(16)), buf.subarray(at)]);
          break;
        }
        case 5:
          if (buf.length >= at + 4) buf.writeUInt32BE(this.pick([0, 1, 1024, 1025, 65_536, 65_537, 0xffff_ffff, this.int(0x1_0000_0000)]), at);
          break;
        default:
          buf = Buffer.concat([buf, this.bytes(this.int(32))]);
      }
    }
    return buf;
  }
  /** A valid message of any type, with edge values. */
  message(): Message {
    const b64 = (n: number): string => this.bytes(n).toString('base64url');
    const nat = (): number => this.pick([0, 1, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER, this.int(1e9)]);
    const text = (max: number): string => {
      const alphabet = ['a', 'Z', ' ', '"', '\\', '/', 'é', '€', '😀', '{', '}', ':', ','];
      const points: string[] = [];
      for (let n = this.int(max); n > 0; n--) points.push(this.pick(alphabet));
      while (Buffer.byteLength(points.join('')) > max) points.pop(); // whole code points only
      return points.join('');
    };
    switch (1 + this.int(8)) {
      case MessageType.HELLO:
        return { type: MessageType.HELLO, id: this.pick(['g', 'office-nas', 'a.b_c-d', 'x'.repeat(64)]), pool: 1 + this.int(1024), reuse: this.int(2), agent: text(64) };
      case MessageType.WHITE_PROOF:
        return { type: MessageType.WHITE_PROOF, proof: b64(32) };
      case MessageType.GRAY_PROOF:
        return { type: MessageType.GRAY_PROOF, proof: b64(32) };
      case MessageType.WELCOME:
        return { type: MessageType.WELCOME, session: b64(16), dataPort: 1 + this.int(65_535), pool: this.int(1025), heartbeatMs: 100 + this.int(600_000 - 99), credits: nat(), services: this.pick(['default', 'ssh,web', 'a,,b-2']) };
      case MessageType.GRANT:
        return { type: MessageType.GRANT, upTo: nat() };
      case MessageType.PING:
        return { type: MessageType.PING, t: nat() };
      case MessageType.PONG:
        return { type: MessageType.PONG, t: nat() };
      default:
        return { type: MessageType.BYE, code: text(64), reason: text(256) };
    }
  }
  /** JSON-ish text: objects with real and hostile keys, odd values, nesting, broken syntax. */
  jsonish(depth = 0): string {
    const keys = ['id', 'pool', 'reuse', 'agent', 'proof', 'session', 'data_port', 'heartbeat_ms', 'credits', 'up_to', 't', 'code', 'reason', '__proto__', 'constructor', 'prototype', '', 'id'];
    const scalar = (): string =>
      this.pick(['0', '-1', '1e308', '1.5', '9007199254740993', '-0', 'true', 'null', '"x"', '"\\u0000"', '"\\ud800"', '"\\u2028"', '"é"', `"${'A'.repeat(this.int(100))}"`, '"abc', '[]', '{}', String(this.int(70_000))]);
    if (depth > 3 || this.rand() < 0.3) return scalar();
    if (this.rand() < 0.2) return `[${Array.from({ length: this.int(4) }, () => this.jsonish(depth + 1)).join(',')}]`;
    const members = Array.from({ length: this.int(6) }, () => `"${this.pick(keys)}":${this.jsonish(depth + 1)}`);
    const text = `{${members.join(this.pick([',', ',', ',', ' , ', ',,']))}}`;
    return this.rand() < 0.1 ? text.slice(0, this.int(text.length)) : text;
  }
}

const FRAME_CODES: ReadonlySet<ErrorCode> = new Set([ErrorCodes.BAD_MAGIC, ErrorCodes.UNSUPPORTED_VERSION, ErrorCodes.FRAME_MALFORMED, ErrorCodes.FRAME_TOO_LARGE]);
const MESSAGE_CODES: ReadonlySet<ErrorCode> = new Set([ErrorCodes.MESSAGE_INVALID]);
const PREAMBLE_CODES: ReadonlySet<ErrorCode> = new Set([ErrorCodes.PREAMBLE_INVALID]);
const START_CODES: ReadonlySet<ErrorCode> = new Set([ErrorCodes.START_HEADER_INVALID]);

/** Runs fn; returns null if it succeeded or threw an allowed RelayError, else a description. */
function breaksRule<T>(fn: () => T, allowed: ReadonlySet<ErrorCode>, onValue?: (v: T) => string | null): string | null {
  let value: T;
  try {
    value = fn();
  } catch (err) {
    if (err instanceof RelayError && allowed.has(err.code)) return null;
    return err instanceof RelayError ? `RelayError ${err.code}: ${err.message}` : `${(err as Error)?.name ?? typeof err}: ${String((err as Error)?.message ?? err)}`;
  }
  return onValue ? onValue(value) : null;
}

/** What decodes must encode (encodeMessage refuses what the peer would refuse) and decode back
 *  to the same message. */
function roundTrips(m: Message): string | null {
  let again: Message;
  try {
    const frame = encodeMessage(m);
    again = decodeMessage({ type: frame[4]!, payload: frame.subarray(6) });
  } catch (err) {
    return `accepted, but does not re-encode: ${(err as Error).message}`;
  }
  return JSON.stringify(again) === JSON.stringify(m) ? null : `round trip changed ${JSON.stringify(m)} into ${JSON.stringify(again)}`;
}

export function runFuzz(budgetMs: number, seed = Date.now() >>> 0): FuzzReport {
  const g = new Gen(prng(seed));
  const perTarget: Record<string, number> = { FrameDecoder: 0, decodeMessage: 0, PreambleReader: 0, parsePreamble: 0, decodeStartHeader: 0 };
  const failures: string[] = [];
  const fail = (target: string, input: Buffer, what: string): void => {
    if (failures.length < 10) failures.push(`${target} (seed ${seed}) input ${input.toString('hex').slice(0, 400)}: ${what}`);
  };
  const key = Buffer.alloc(32, 7);
  const session = Buffer.alloc(16, 9);
  const validStart = (): Buffer =>
    encodeStartHeader(
      g.rand() < 0.5
        ? { family: 4, srcAddress: `${g.int(256)}.${g.int(256)}.1.2`, srcPort: g.int(65_536), dstAddress: '10.0.0.1', dstPort: g.int(65_536) }
        : { family: 6, srcAddress: g.pick(['::1', '2001:db8::1', '::ffff:1.2.3.4', 'fe80::1']), srcPort: g.int(65_536), dstAddress: '::', dstPort: g.int(65_536) },
      g.int(256),
    );

  const started = Date.now();
  let inputs = 0;
  while (Date.now() - started < budgetMs) {
    for (let batch = 0; batch < 50; batch++) {
      inputs += 1;
      switch (inputs % 5) {
        case 0: {
          // FrameDecoder over a damaged control stream (or pure noise), in random chunks; every
          // frame it yields also goes through decodeMessage.
          perTarget.FrameDecoder! += 1;
          const valid = Buffer.concat([encodePreface(), ...Array.from({ length: 1 + g.int(4) }, () => encodeMessage(g.message()))]);
          const input = g.rand() < 0.15 ? g.bytes(g.int(300)) : g.mutate(valid);
          const max = g.pick([0, 1, 16, 1024, 65_536]);
          const decoder = new FrameDecoder({ maxPayloadBytes: max, expectPreface: g.rand() < 0.9 });
          for (const chunk of g.split(input)) {
            let frames: ReturnType<FrameDecoder['push']> = [];
            const problem = breaksRule(() => (frames = decoder.push(chunk)), FRAME_CODES);
            if (problem) fail('FrameDecoder', input, problem);
            for (const frame of frames) {
              if (frame.payload.length > max) fail('FrameDecoder', input, `yielded a ${frame.payload.length}-byte payload over the ${max} limit`);
              const mproblem = breaksRule(() => decodeMessage(frame), MESSAGE_CODES, roundTrips);
              if (mproblem) fail('decodeMessage', frame.payload, mproblem);
            }
            if (problem) break;
          }
          break;
        }
        case 1: {
          perTarget.decodeMessage! += 1;
          const type = g.rand() < 0.8 ? 1 + g.int(8) : g.int(256);
          const roll = g.rand();
          const payload =
            roll < 0.2 ? g.bytes(g.int(200)) : roll < 0.7 ? Buffer.from(g.jsonish(), 'utf8') : g.mutate(encodeMessage(g.message()).subarray(6));
          const problem = breaksRule(() => decodeMessage({ type, payload }), MESSAGE_CODES, roundTrips);
          if (problem) fail('decodeMessage', payload, problem);
          break;
        }
        case 2: {
          perTarget.PreambleReader! += 1;
          const valid = encodePreamble(session, 1 + g.int(1e9), key);
          const input = g.rand() < 0.2 ? g.bytes(g.int(100)) : g.mutate(valid);
          const reader = new PreambleReader();
          for (const chunk of g.split(input)) {
            let done: Buffer | null = null;
            const problem = breaksRule(() => (done = reader.push(chunk)), PREAMBLE_CODES, (p) =>
              p !== null && p.length !== PREAMBLE_BYTES ? `yielded ${p.length} bytes` : null,
            );
            if (problem) fail('PreambleReader', input, problem);
            if (problem || done) break;
          }
          break;
        }
        case 3: {
          perTarget.parsePreamble! += 1;
          const roll = g.rand();
          const input = roll < 0.3 ? g.bytes(g.pick([0, 59, 60, 61, g.int(120)])) : roll < 0.6 ? Buffer.concat([Buffer.from('RLYD'), g.bytes(56)]) : g.mutate(encodePreamble(session, 1 + g.int(1e9), key));
          const problem = breaksRule(() => parsePreamble(input), PREAMBLE_CODES, (f) =>
            Number.isSafeInteger(f.counter) && f.counter >= 1 && f.sessionId.length === 16 && f.tag.length === 32 ? null : `bad fields ${JSON.stringify(f)}`,
          );
          if (problem) fail('parsePreamble', input, problem);
          break;
        }
        default: {
          perTarget.decodeStartHeader! += 1;
          const roll = g.rand();
          let input: Buffer;
          if (roll < 0.25) input = g.bytes(g.pick([0, 39, 40, 41, g.int(80)]));
          else if (roll < 0.6) {
            input = g.bytes(START_HEADER_BYTES);
            input[0] = 1;
            input[1] = g.pick([4, 6, 6, 0, 5]);
            input.writeUInt16BE(g.rand() < 0.8 ? 0 : g.int(65_536), 6);
            if (input[1] === 4 && g.rand() < 0.8) {
              input.fill(0, 12, 24);
              input.fill(0, 28, 40);
            }
          } else input = g.mutate(validStart());
          const problem = breaksRule(() => decodeStartHeader(input), START_CODES, (info) =>
            encodeStartHeader(info, info.service).equals(input) ? null : 'decoded header does not re-encode to the same bytes',
          );
          if (problem) fail('decodeStartHeader', input, problem);
        }
      }
    }
  }
  return { seed, elapsedMs: Date.now() - started, inputs, perTarget, failures };
}

/** Runs runFuzz in a worker; rejects if it does not report within budget + graceMs (a hang). */
export function fuzzInWorker(budgetMs: number, seed?: number, graceMs = 10_000): Promise<FuzzReport> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: { relayFuzz: { budgetMs, seed } } });
    const watchdog = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`fuzz worker still running ${budgetMs + graceMs} ms after a ${budgetMs} ms budget: a decoder hangs`));
    }, budgetMs + graceMs);
    worker.once('message', (report: FuzzReport) => {
      clearTimeout(watchdog);
      void worker.terminate();
      resolve(report);
    });
    worker.once('error', (err) => {
      clearTimeout(watchdog);
      reject(err);
    });
  });
}

const request = (workerData as { relayFuzz?: { budgetMs: number; seed?: number } } | null)?.relayFuzz;
if (!isMainThread && request && parentPort) {
  parentPort.postMessage(runFuzz(request.budgetMs, request.seed));
}
