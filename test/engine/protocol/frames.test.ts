import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ErrorCodes } from '../../../src/errors.js';
import {
  CONTROL_MAGIC,
  FRAME_HEADER_BYTES,
  PREFACE_BYTES,
  PROTOCOL_VERSION,
  encodePreface,
} from '../../../src/engine/protocol/constants.js';
import { FrameDecoder, encodeFrame, type Frame } from '../../../src/engine/protocol/frames.js';
import { assertRelayError, hex, splitAt } from './helpers.js';

const LIMIT = 1024;

/** Comparable form of a frame list. */
function show(frames: Frame[]): Array<{ type: number; payload: string }> {
  return frames.map((f) => ({ type: f.type, payload: f.payload.toString('hex') }));
}

function decodeChunks(chunks: Buffer[], expectPreface = true, maxPayloadBytes = LIMIT): Frame[] {
  const decoder = new FrameDecoder({ maxPayloadBytes, expectPreface });
  const frames: Frame[] = [];
  for (const chunk of chunks) frames.push(...decoder.push(chunk));
  assert.equal(decoder.bufferedBytes, 0, 'the vector ends on a frame boundary');
  return frames;
}

// Vector written out in hex so the wire format is pinned independently of encodeFrame.
const PAYLOAD_300 = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff));
const VECTOR = Buffer.concat([
  hex('524c5943 02 000000'), // preface: "RLYC", version 2, reserved
  hex('00000003 01 00 616263'), // type 1, "abc"
  hex('00000000 06 00'), // type 6, empty payload
  hex('0000012c c8 00'), // type 200, 300 bytes
  PAYLOAD_300,
  hex('00000000 07 00'), // a second empty frame, back to back
  hex('00000001 00 00 ff'), // type 0, one byte
]);
const EXPECTED = [
  { type: 1, payload: '616263' },
  { type: 6, payload: '' },
  { type: 200, payload: PAYLOAD_300.toString('hex') },
  { type: 7, payload: '' },
  { type: 0, payload: 'ff' },
];

test('preface bytes are the magic, the version and three zero bytes', () => {
  assert.deepEqual(encodePreface(), hex('524c5943 02 000000'));
  assert.equal(encodePreface().length, PREFACE_BYTES);
  assert.equal(PROTOCOL_VERSION, 2);
  assert.deepEqual(CONTROL_MAGIC, Buffer.from('RLYC'));
  // Each call returns a fresh buffer, so a caller scribbling on one cannot corrupt the next.
  const first = encodePreface();
  first.fill(0);
  assert.deepEqual(encodePreface(), hex('524c594302000000'));
});

test('encodeFrame writes length, type and zero flags before the payload', () => {
  assert.deepEqual(encodeFrame(1, Buffer.from('abc')), hex('00000003 01 00 616263'));
  assert.deepEqual(encodeFrame(255, Buffer.alloc(0)), hex('00000000 ff 00'));
  assert.deepEqual(
    Buffer.concat([encodePreface(), ...EXPECTED.map((f) => encodeFrame(f.type, Buffer.from(f.payload, 'hex')))]),
    VECTOR,
  );
  for (const bad of [-1, 256, 1.5, Number.NaN]) assertRelayError(() => encodeFrame(bad, Buffer.alloc(0)), ErrorCodes.INTERNAL);
});

test('the vector decodes the same whole, byte by byte and split at every offset', () => {
  assert.deepEqual(show(decodeChunks([VECTOR])), EXPECTED);
  assert.deepEqual(show(decodeChunks(splitAt(VECTOR, Array.from({ length: VECTOR.length }, (_, i) => i)))), EXPECTED);
  for (let cut = 0; cut <= VECTOR.length; cut++) {
    assert.deepEqual(show(decodeChunks(splitAt(VECTOR, [cut]))), EXPECTED, `split at ${cut}`);
  }
});

test('the vector decodes the same under random multi-way splits', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: VECTOR.length }), { maxLength: 24 }), (cuts) => {
      assert.deepEqual(show(decodeChunks(splitAt(VECTOR, cuts))), EXPECTED);
    }),
    { numRuns: 500 },
  );
});

test('random frames survive encoding and any chunking', () => {
  const frameArb = fc.record({
    type: fc.integer({ min: 0, max: 255 }),
    payload: fc.uint8Array({ maxLength: 200 }),
  });
  fc.assert(
    fc.property(
      fc.array(frameArb, { maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 16 }),
      fc.boolean(),
      (frames, rawCuts, withPreface) => {
        const wire = Buffer.concat([
          withPreface ? encodePreface() : Buffer.alloc(0),
          ...frames.map((f) => encodeFrame(f.type, Buffer.from(f.payload))),
        ]);
        const cuts = rawCuts.map((c) => c % (wire.length + 1));
        const decoded = decodeChunks(splitAt(wire, cuts), withPreface);
        assert.deepEqual(
          show(decoded),
          frames.map((f) => ({ type: f.type, payload: Buffer.from(f.payload).toString('hex') })),
        );
      },
    ),
    { numRuns: 300 },
  );
});

test('a payload whole inside a chunk is a view of it; a split payload is a private copy', () => {
  const chunk = Buffer.concat([encodePreface(), encodeFrame(3, Buffer.from('hello'))]);
  const [whole] = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: true }).push(chunk);
  assert.ok(whole);
  assert.equal(whole.payload.buffer, chunk.buffer, 'no copy when the payload is inside one chunk');

  const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: false });
  const [a, b] = splitAt(encodeFrame(3, Buffer.from('hello')), [8]);
  assert.deepEqual(decoder.push(a!), []);
  const [split] = decoder.push(b!);
  a!.fill(0);
  b!.fill(0);
  assert.equal(split?.payload.toString(), 'hello', 'reusing the chunks does not change the frame');
});

test('a payload of exactly the limit is accepted, one byte more is refused', () => {
  const atLimit = Buffer.concat([encodePreface(), encodeFrame(5, Buffer.alloc(LIMIT, 1))]);
  const frames = decodeChunks([atLimit]);
  assert.equal(frames[0]?.payload.length, LIMIT);

  const overLimit = Buffer.concat([encodePreface(), encodeFrame(5, Buffer.alloc(LIMIT + 1, 1))]);
  const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: true });
  assertRelayError(() => decoder.push(overLimit), ErrorCodes.FRAME_TOO_LARGE, /^frame payload length 1025 exceeds limit 1024$/);
});

test('an over-limit length is refused as soon as its 4 bytes arrive, before type, flags or payload', () => {
  for (const length of [LIMIT + 1, 70_000, 0xffff_ffff]) {
    const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: true });
    decoder.push(encodePreface());
    const header = Buffer.alloc(4);
    header.writeUInt32BE(length);
    // The first three length bytes are not enough to decide (0x00000400 would still be fine).
    assert.deepEqual(decoder.push(header.subarray(0, 3)), []);
    const err = assertRelayError(
      () => decoder.push(header.subarray(3)),
      ErrorCodes.FRAME_TOO_LARGE,
      new RegExp(`^frame payload length ${length} exceeds limit ${LIMIT}$`),
    );
    assert.deepEqual(err.details, { length, limit: LIMIT });
  }
  // Same when the length arrives together with the preface in one chunk.
  const decoder = new FrameDecoder({ maxPayloadBytes: 65_536, expectPreface: true });
  assertRelayError(
    () => decoder.push(Buffer.concat([encodePreface(), hex('ffffffff')])),
    ErrorCodes.FRAME_TOO_LARGE,
    /length 4294967295 exceeds limit 65536/,
  );
});

test('non-zero flags are refused, whichever bit is set', () => {
  for (let bit = 0; bit < 8; bit++) {
    const frame = encodeFrame(1, Buffer.from('x'));
    frame[5] = 1 << bit;
    const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: false });
    // Nothing to object to until the flags byte itself arrives.
    assert.deepEqual(decoder.push(frame.subarray(0, 5)), []);
    assertRelayError(() => decoder.push(frame.subarray(5)), ErrorCodes.FRAME_MALFORMED, /flags are 0x[0-9a-f]{2}.*must be 0x00/);
  }
});

test('a wrong magic is refused at the first wrong byte', () => {
  // An HTTP client: refused on "G", the very first byte.
  const http = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: true });
  assertRelayError(() => http.push(Buffer.from('G')), ErrorCodes.BAD_MAGIC, /byte 0 is 0x47, expected 0x52/);

  for (let position = 0; position < CONTROL_MAGIC.length; position++) {
    const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: true });
    assert.deepEqual(decoder.push(CONTROL_MAGIC.subarray(0, position)), []);
    const wrong = Buffer.from([CONTROL_MAGIC[position]! ^ 0x20]);
    assertRelayError(() => decoder.push(wrong), ErrorCodes.BAD_MAGIC, new RegExp(`byte ${position} `));
  }
});

test('another protocol version is refused', () => {
  for (const version of [0, 1, 3, 255]) {
    const preface = encodePreface();
    preface[4] = version;
    const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: true });
    assertRelayError(() => decoder.push(preface), ErrorCodes.UNSUPPORTED_VERSION, new RegExp(`version ${version} is not supported`));
  }
});

test('non-zero reserved preface bytes are refused', () => {
  for (let position = 5; position < PREFACE_BYTES; position++) {
    const preface = encodePreface();
    preface[position] = 0x80;
    const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: true });
    assertRelayError(() => decoder.push(preface), ErrorCodes.FRAME_MALFORMED, new RegExp(`reserved byte ${position} is 0x80`));
  }
});

test('without expectPreface the first bytes are a frame header', () => {
  const frames = decodeChunks([encodeFrame(2, Buffer.from('p'))], false);
  assert.deepEqual(show(frames), [{ type: 2, payload: '70' }]);
  // A preface sent to a decoder that does not expect one reads as an absurd length.
  const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: false });
  assertRelayError(() => decoder.push(encodePreface()), ErrorCodes.FRAME_TOO_LARGE);
});

test('after an error the decoder is dead: every push rethrows the same error', () => {
  const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: true });
  const first = assertRelayError(() => decoder.push(Buffer.from('XYZ')), ErrorCodes.BAD_MAGIC);
  for (const chunk of [encodePreface(), encodeFrame(1, Buffer.from('ok')), Buffer.alloc(0)]) {
    const again = assertRelayError(() => decoder.push(chunk), ErrorCodes.BAD_MAGIC);
    assert.equal(again, first);
  }
});

test('frames completed before an error in the same chunk are not returned', () => {
  const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: false });
  const bad = encodeFrame(1, Buffer.from('b'));
  bad[5] = 1;
  assertRelayError(() => decoder.push(Buffer.concat([encodeFrame(1, Buffer.from('a')), bad])), ErrorCodes.FRAME_MALFORMED);
});

test('setMaxPayloadBytes raises the limit for frames after the call (e.g. after auth)', () => {
  const big = encodeFrame(5, Buffer.alloc(2000, 0x41));
  const before = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: true });
  before.push(encodePreface());
  assertRelayError(() => before.push(big), ErrorCodes.FRAME_TOO_LARGE, /length 2000 exceeds limit 1024/);

  const after = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: true });
  assert.equal(after.push(Buffer.concat([encodePreface(), encodeFrame(3, Buffer.from('proof'))])).length, 1);
  after.setMaxPayloadBytes(65_536);
  const frames = after.push(big);
  assert.equal(frames[0]?.payload.length, 2000);
  assertRelayError(() => after.push(hex('00010001')), ErrorCodes.FRAME_TOO_LARGE, /length 65537 exceeds limit 65536/);

  // Lowering works the same way.
  const lowered = new FrameDecoder({ maxPayloadBytes: 65_536, expectPreface: false });
  lowered.setMaxPayloadBytes(10);
  assertRelayError(() => lowered.push(encodeFrame(1, Buffer.alloc(11))), ErrorCodes.FRAME_TOO_LARGE);
});

test('a limit set while a header is half-read applies to that header', () => {
  const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: false });
  const frame = encodeFrame(1, Buffer.alloc(2000));
  decoder.push(frame.subarray(0, 2));
  decoder.setMaxPayloadBytes(4096);
  assert.equal(decoder.push(frame.subarray(2)).length, 1);
});

test('invalid limits are a programming error', () => {
  for (const bad of [-1, 1.5, Number.NaN, 2 ** 32]) {
    assertRelayError(() => new FrameDecoder({ maxPayloadBytes: bad, expectPreface: true }), ErrorCodes.INTERNAL);
    assertRelayError(() => new FrameDecoder({ maxPayloadBytes: 1, expectPreface: true }).setMaxPayloadBytes(bad), ErrorCodes.INTERNAL);
  }
});

test('bufferedBytes counts the bytes of an incomplete preface or frame', () => {
  const decoder = new FrameDecoder({ maxPayloadBytes: LIMIT, expectPreface: true });
  assert.equal(decoder.bufferedBytes, 0);
  decoder.push(encodePreface().subarray(0, 3));
  assert.equal(decoder.bufferedBytes, 3);
  decoder.push(encodePreface().subarray(3));
  assert.equal(decoder.bufferedBytes, 0, 'a complete preface leaves nothing pending');
  const frame = encodeFrame(1, Buffer.from('abcdef'));
  decoder.push(frame.subarray(0, 4));
  assert.equal(decoder.bufferedBytes, 4);
  decoder.push(frame.subarray(4, 9));
  assert.equal(decoder.bufferedBytes, 9);
  assert.equal(decoder.push(frame.subarray(9)).length, 1);
  assert.equal(decoder.bufferedBytes, 0);
});

test('a large payload fed one byte at a time arrives intact', () => {
  const payload = Buffer.from(Array.from({ length: 65_536 }, (_, i) => (i * 31) & 0xff));
  const wire = encodeFrame(9, payload);
  const decoder = new FrameDecoder({ maxPayloadBytes: 65_536, expectPreface: false });
  const frames: Frame[] = [];
  for (let i = 0; i < wire.length; i++) frames.push(...decoder.push(wire.subarray(i, i + 1)));
  assert.equal(frames.length, 1);
  assert.ok(frames[0]!.payload.equals(payload));
  assert.equal(FRAME_HEADER_BYTES, 6);
});
