// Properties of the decoders under hostile input (fast-check), and a time-budgeted fuzz of all
// of them in a worker thread with a watchdog (test/soak/fuzz.ts; `npm run soak` runs it longer).
// Valid streams surviving any chunking are covered in test/engine/protocol/; these are about
// streams an attacker writes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RelayError } from '../../src/errors.js';
import { encodePreface } from '../../src/engine/protocol/constants.js';
import { FrameDecoder } from '../../src/engine/protocol/frames.js';
import { decodeMessage, encodeMessage, MessageType, type Message } from '../../src/engine/protocol/messages.js';
import { encodePreamble, PREAMBLE_BYTES, PreambleReader } from '../../src/engine/protocol/preamble.js';
import { fuzzInWorker } from '../soak/fuzz.js';

interface Outcome {
  frames: string[];
  error: string | null;
}

/** Feeds chunks until the first error; frames as "type:hex". */
function decodeChunks(chunks: Buffer[], max: number, expectPreface: boolean): Outcome {
  const decoder = new FrameDecoder({ maxPayloadBytes: max, expectPreface });
  const frames: string[] = [];
  for (const chunk of chunks) {
    try {
      for (const f of decoder.push(chunk)) frames.push(`${f.type}:${f.payload.toString('hex')}`);
    } catch (err) {
      assert.ok(err instanceof RelayError, `only RelayError may be thrown, got ${String(err)}`);
      return { frames, error: err.code };
    }
  }
  return { frames, error: null };
}

function cut(buf: Buffer, points: number[]): Buffer[] {
  const sorted = [...new Set(points.map((p) => p % (buf.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let at = 0;
  for (const p of sorted) {
    chunks.push(buf.subarray(at, p));
    at = p;
  }
  chunks.push(buf.subarray(at));
  return chunks;
}

const bytewise = (buf: Buffer): Buffer[] => Array.from(buf, (b) => Buffer.from([b]));

/** Streams an attacker might write: noise, or a real preface and frames with damage. */
const hostileStream = fc.oneof(
  fc.uint8Array({ maxLength: 400 }).map((a) => Buffer.from(a)),
  fc
    .tuple(
      fc.array(fc.record({ type: fc.integer({ min: 0, max: 255 }), payload: fc.uint8Array({ maxLength: 80 }), flags: fc.constantFrom(0, 0, 0, 1, 0x80) }), { maxLength: 6 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
      fc.constantFrom(0, 1, 0xffff_ffff, 1025, 65_537),
      fc.boolean(),
    )
    .map(([frames, flips, lie, useLie]) => {
      const parts = [encodePreface()];
      for (const f of frames) {
        const header = Buffer.alloc(6);
        header.writeUInt32BE(useLie && parts.length === 2 ? lie : f.payload.length, 0);
        header[4] = f.type;
        header[5] = f.flags;
        parts.push(header, Buffer.from(f.payload));
      }
      const buf = Buffer.concat(parts);
      for (const [at, value] of flips) if (buf.length > 0) buf[at % buf.length] = value;
      return buf;
    }),
);

const printable = (max: number): fc.Arbitrary<string> => fc.stringMatching(new RegExp(`^[ -~]{0,${max}}$`));
const b64 = (n: number): fc.Arbitrary<string> => fc.uint8Array({ minLength: n, maxLength: n }).map((a) => Buffer.from(a).toString('base64url'));
const validMessage: fc.Arbitrary<Message> = fc.oneof(
  fc.record({ type: fc.constant(MessageType.HELLO), id: fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/), pool: fc.integer({ min: 1, max: 1024 }), reuse: fc.integer({ min: 0, max: 1 }), agent: printable(64) }),
  fc.record({ type: fc.constant(MessageType.WHITE_PROOF), proof: b64(32) }),
  fc.record({ type: fc.constant(MessageType.GRAY_PROOF), proof: b64(32) }),
  fc.record({
    type: fc.constant(MessageType.WELCOME),
    session: b64(16),
    dataPort: fc.integer({ min: 1, max: 65_535 }),
    pool: fc.integer({ min: 0, max: 1024 }),
    heartbeatMs: fc.integer({ min: 100, max: 600_000 }),
    credits: fc.maxSafeNat(),
    services: fc.uniqueArray(fc.stringMatching(/^[a-z0-9-]{1,32}$/), { minLength: 1, maxLength: 8 }).map((n) => n.join(',')),
  }),
  fc.record({ type: fc.constant(MessageType.SERVICES), services: fc.uniqueArray(fc.stringMatching(/^[a-z0-9-]{0,32}$/), { maxLength: 8 }).map((n) => n.join(',')) }),
  fc.record({ type: fc.constant(MessageType.GRANT), upTo: fc.maxSafeNat() }),
  fc.record({ type: fc.constant(MessageType.PING), t: fc.maxSafeNat() }),
  fc.record({ type: fc.constant(MessageType.PONG), t: fc.maxSafeNat() }),
  fc.record({ type: fc.constant(MessageType.BYE), code: printable(64), reason: printable(256) }),
) as fc.Arbitrary<Message>;

describe('decoder properties under hostile input', () => {
  it('FrameDecoder: any split of any byte stream gives the same error, and a prefix of the frames a byte-by-byte reader sees', () => {
    fc.assert(
      fc.property(hostileStream, fc.array(fc.nat(), { maxLength: 12 }), fc.constantFrom(0, 16, 1024, 65_536), fc.boolean(), (stream, points, max, preface) => {
        const reference = decodeChunks(bytewise(stream), max, preface);
        const chunked = decodeChunks(cut(stream, points), max, preface);
        assert.equal(chunked.error, reference.error);
        assert.deepEqual(chunked.frames, reference.frames.slice(0, chunked.frames.length));
        if (reference.error === null) assert.deepEqual(chunked.frames, reference.frames);
        for (const f of reference.frames) assert.ok(f.length - f.indexOf(':') - 1 <= 2 * max, 'no payload over the limit');
      }),
      { numRuns: 400 },
    );
  });

  it('a control stream of valid messages decodes to the same messages under any split', () => {
    fc.assert(
      fc.property(fc.array(validMessage, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 16 }), (messages, points) => {
        const stream = Buffer.concat([encodePreface(), ...messages.map(encodeMessage)]);
        const decoder = new FrameDecoder({ maxPayloadBytes: 65_536, expectPreface: true });
        const decoded = cut(stream, points).flatMap((c) => decoder.push(c).map(decodeMessage));
        assert.deepEqual(decoded.map((m) => ({ ...m })), messages.map((m) => ({ ...m })));
      }),
      { numRuns: 300 },
    );
  });

  it('decodeMessage: any payload under any type either decodes to a message that round-trips, or is MESSAGE_INVALID', () => {
    const payload = fc.oneof(
      fc.uint8Array({ maxLength: 120 }).map((a) => Buffer.from(a)),
      fc.json({ maxDepth: 3 }).map((j) => Buffer.from(j, 'utf8')),
      fc.dictionary(fc.constantFrom('id', 'pool', 'agent', 'proof', 't', 'up_to', 'code', 'reason', '__proto__', 'constructor'), fc.jsonValue({ maxDepth: 2 })).map((d) => Buffer.from(JSON.stringify(d), 'utf8')),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 255 }), payload, (type, bytes) => {
        let m: Message;
        try {
          m = decodeMessage({ type, payload: bytes });
        } catch (err) {
          assert.ok(err instanceof RelayError && err.code === 'RELAY_ERR_MESSAGE_INVALID', `unexpected ${String(err)}`);
          return;
        }
        const frame = encodeMessage(m);
        assert.deepEqual(decodeMessage({ type: frame[4]!, payload: frame.subarray(6) }), m);
      }),
      { numRuns: 1000 },
    );
    assert.equal((Object.prototype as Record<string, unknown>).polluted, undefined);
  });

  it('PreambleReader: up to 60 bytes give the same verdict under any split; past 60 every split ends in an error', () => {
    const key = Buffer.alloc(32, 1);
    const input = fc.oneof(
      fc.uint8Array({ maxLength: 80 }).map((a) => Buffer.from(a)),
      fc.tuple(fc.integer({ min: 1, max: 2 ** 40 }), fc.integer({ min: 0, max: 70 }), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 2 })).map(([counter, keep, flips]) => {
        const p = Buffer.concat([encodePreamble(Buffer.alloc(16, 3), counter, key), Buffer.alloc(10, 0x41)]).subarray(0, keep);
        for (const [at, v] of flips) if (p.length > 0) p[at % p.length] = v;
        return Buffer.from(p);
      }),
    );
    const verdict = (chunks: Buffer[]): string => {
      const reader = new PreambleReader();
      let got: Buffer | null = null;
      for (const chunk of chunks) {
        try {
          got = reader.push(chunk) ?? got;
        } catch (err) {
          assert.ok(err instanceof RelayError && err.code === 'RELAY_ERR_PREAMBLE_INVALID', `unexpected ${String(err)}`);
          return got ? `preamble then error` : 'error';
        }
      }
      return got ? `preamble ${got.toString('hex')}` : 'incomplete';
    };
    fc.assert(
      fc.property(input, fc.array(fc.nat(), { maxLength: 8 }), (bytes, points) => {
        const whole = verdict([bytes]);
        const split = verdict(cut(bytes, points));
        if (bytes.length <= PREAMBLE_BYTES) assert.equal(split, whole);
        else assert.ok(split.endsWith('error'), `${bytes.length} bytes must end in an error, got ${split}`);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('decoder fuzz', () => {
  it('3 s of damaged and random input to every decoder: only their own RelayErrors, no hang, canonical round trips', async (t) => {
    const report = await fuzzInWorker(3000);
    t.diagnostic(`seed ${report.seed}: ${report.inputs} inputs in ${report.elapsedMs} ms (${JSON.stringify(report.perTarget)})`);
    assert.deepEqual(report.failures, []);
    assert.ok(report.inputs >= 5000, `only ${report.inputs} inputs in 3 s`);
    for (const [target, n] of Object.entries(report.perTarget)) assert.ok(n > 0, `${target} was never fuzzed`);
  });
});
