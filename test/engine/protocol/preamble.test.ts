import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ErrorCodes } from '../../../src/errors.js';
import {
  PREAMBLE_BYTES,
  PreambleReader,
  encodePreamble,
  parsePreamble,
  preambleTagValid,
  sessionIdFromString,
  sessionIdToString,
} from '../../../src/engine/protocol/preamble.js';
import { assertRelayError, hex, splitAt } from './helpers.js';

const SESSION_ID = Buffer.from(Array.from({ length: 16 }, (_, i) => 0x10 + i));
const DATA_KEY = Buffer.alloc(32, 0xaa);
const OTHER_KEY = Buffer.alloc(32, 0xab);
const COUNTER = 0x01_0203_0405;

// Computed independently with Python's hmac module.
const VECTOR = hex(
  '524c5944 101112131415161718191a1b1c1d1e1f 0000000102030405' +
    'e47f464eb500d9ffac476ad6ca02d0e474ab9061f4df40c605c05aaa5ac047cc',
);

test('preamble bytes match an independently computed vector', () => {
  assert.equal(PREAMBLE_BYTES, 60);
  assert.deepEqual(encodePreamble(SESSION_ID, COUNTER, DATA_KEY), VECTOR);
  assert.equal(preambleTagValid(VECTOR, DATA_KEY), true);
});

test('round trip through parsePreamble for edge counters', () => {
  for (const counter of [1, 2, 0xffff_ffff, 0x1_0000_0000, 0x1_0000_0001, Number.MAX_SAFE_INTEGER]) {
    const preamble = encodePreamble(SESSION_ID, counter, DATA_KEY);
    assert.equal(preamble.length, PREAMBLE_BYTES);
    const fields = parsePreamble(preamble);
    assert.equal(fields.counter, counter);
    assert.deepEqual(fields.sessionId, SESSION_ID);
    assert.deepEqual(fields.tag, preamble.subarray(28));
    assert.equal(preambleTagValid(preamble, DATA_KEY), true);
  }
});

test('parsed fields are copies, independent of the input buffer', () => {
  const preamble = encodePreamble(SESSION_ID, 7, DATA_KEY);
  const fields = parsePreamble(preamble);
  preamble.fill(0);
  assert.deepEqual(fields.sessionId, SESSION_ID);
  assert.equal(fields.tag.every((b) => b === 0), false);
});

test('a tag made with another key does not verify', () => {
  assert.equal(preambleTagValid(encodePreamble(SESSION_ID, 1, OTHER_KEY), DATA_KEY), false);
  assert.equal(preambleTagValid(encodePreamble(SESSION_ID, 1, DATA_KEY), OTHER_KEY), false);
});

test('flipping any bit of a valid preamble makes it fail to parse or fail its tag', () => {
  for (let i = 0; i < PREAMBLE_BYTES; i++) {
    for (const mask of [0x01, 0x80, 0xff]) {
      const tampered = Buffer.from(VECTOR);
      tampered[i] = tampered[i]! ^ mask;
      let parsed = true;
      try {
        parsePreamble(tampered);
      } catch (err) {
        parsed = false;
        assertRelayError(() => { throw err; }, ErrorCodes.PREAMBLE_INVALID);
      }
      assert.ok(!parsed || !preambleTagValid(tampered, DATA_KEY), `byte ${i} mask ${mask} went unnoticed`);
    }
  }
});

test('parsePreamble refuses wrong length, wrong magic, counter 0 and unsafe counters', () => {
  for (const length of [0, 59, 61]) {
    assertRelayError(() => parsePreamble(Buffer.alloc(length)), ErrorCodes.PREAMBLE_INVALID, new RegExp(`is ${length} bytes, expected exactly 60`));
    assert.equal(preambleTagValid(Buffer.alloc(length), DATA_KEY), false);
  }
  const wrongMagic = Buffer.from(VECTOR);
  wrongMagic.write('RLYC', 0, 'latin1');
  assertRelayError(() => parsePreamble(wrongMagic), ErrorCodes.PREAMBLE_INVALID, /magic is 0x524c5943, expected 0x524c5944/);

  const zero = Buffer.from(VECTOR);
  zero.fill(0, 20, 28);
  assertRelayError(() => parsePreamble(zero), ErrorCodes.PREAMBLE_INVALID, /counter is 0, counters start at 1/);

  const unsafe = Buffer.from(VECTOR);
  unsafe.writeBigUInt64BE(2n ** 53n, 20);
  assertRelayError(() => parsePreamble(unsafe), ErrorCodes.PREAMBLE_INVALID, /exceeds limit 9007199254740991/);
  const max = Buffer.from(VECTOR);
  max.writeBigUInt64BE(2n ** 53n - 1n, 20);
  assert.equal(parsePreamble(max).counter, Number.MAX_SAFE_INTEGER);
});

test('encodePreamble refuses bad arguments', () => {
  for (const counter of [0, -1, 1.5, Number.MAX_SAFE_INTEGER + 1, Number.NaN]) {
    assertRelayError(() => encodePreamble(SESSION_ID, counter, DATA_KEY), ErrorCodes.INTERNAL);
  }
  assertRelayError(() => encodePreamble(Buffer.alloc(15), 1, DATA_KEY), ErrorCodes.INTERNAL);
  assertRelayError(() => encodePreamble(SESSION_ID, 1, Buffer.alloc(16)), ErrorCodes.INTERNAL);
  assertRelayError(() => preambleTagValid(VECTOR, Buffer.alloc(16)), ErrorCodes.INTERNAL);
});

function readAll(chunks: Buffer[]): Buffer {
  const reader = new PreambleReader();
  let result: Buffer | null = null;
  chunks.forEach((chunk, i) => {
    const out = reader.push(chunk);
    if (i < chunks.length - 1) assert.equal(out, null, `complete too early, at chunk ${i}`);
    else result = out;
  });
  assert.ok(result !== null, 'complete at the last chunk');
  return result;
}

test('PreambleReader: whole, byte by byte, and split at every offset', () => {
  assert.deepEqual(readAll([VECTOR]), VECTOR);
  assert.deepEqual(readAll(splitAt(VECTOR, Array.from({ length: 59 }, (_, i) => i + 1))), VECTOR);
  for (let cut = 1; cut < PREAMBLE_BYTES; cut++) assert.deepEqual(readAll(splitAt(VECTOR, [cut])), VECTOR, `split at ${cut}`);
});

test('PreambleReader: random multi-way splits, including empty chunks', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: PREAMBLE_BYTES }), { maxLength: 12 }), (cuts) => {
      const chunks = splitAt(VECTOR, cuts);
      // Drop trailing empty chunks: the preamble is complete before them.
      while (chunks.length > 1 && chunks[chunks.length - 1]!.length === 0) chunks.pop();
      assert.deepEqual(readAll(chunks), VECTOR);
    }),
    { numRuns: 300 },
  );
});

test('PreambleReader: bytes past the preamble are refused', () => {
  const sameChunk = new PreambleReader();
  assertRelayError(() => sameChunk.push(Buffer.concat([VECTOR, Buffer.from('x')])), ErrorCodes.PREAMBLE_INVALID, /^1 bytes after the preamble/);

  const split = new PreambleReader();
  split.push(VECTOR.subarray(0, 50));
  assertRelayError(() => split.push(Buffer.concat([VECTOR.subarray(50), Buffer.from('GET /')])), ErrorCodes.PREAMBLE_INVALID, /^5 bytes after/);

  const later = new PreambleReader();
  assert.deepEqual(later.push(VECTOR), VECTOR);
  assert.equal(later.push(Buffer.alloc(0)), null, 'an empty chunk is not data');
  assertRelayError(() => later.push(Buffer.from('ab')), ErrorCodes.PREAMBLE_INVALID, /^2 bytes after the preamble/);
});

test('PreambleReader: junk is refused at its first wrong byte', () => {
  const scanner = new PreambleReader();
  const err = assertRelayError(() => scanner.push(Buffer.from('G')), ErrorCodes.PREAMBLE_INVALID, /byte 0 is 0x47, expected 0x52/);
  assert.equal(scanner.receivedBytes, 0);
  // Dead afterwards, even for correct bytes.
  assert.equal(assertRelayError(() => scanner.push(VECTOR), ErrorCodes.PREAMBLE_INVALID), err);

  for (let position = 0; position < 4; position++) {
    const reader = new PreambleReader();
    if (position > 0) assert.equal(reader.push(VECTOR.subarray(0, position)), null);
    assertRelayError(() => reader.push(Buffer.from([VECTOR[position]! ^ 0x01])), ErrorCodes.PREAMBLE_INVALID, new RegExp(`byte ${position} `));
  }
  // A control-channel preface sent to the data port by mistake.
  assertRelayError(() => new PreambleReader().push(Buffer.from('RLYC')), ErrorCodes.PREAMBLE_INVALID, /byte 3 is 0x43/);
});

test('PreambleReader keeps a whole single-chunk preamble without copying', () => {
  const chunk = Buffer.from(VECTOR);
  assert.equal(new PreambleReader().push(chunk), chunk);
});

test('session ids convert to and from base64url', () => {
  assert.equal(sessionIdToString(SESSION_ID), 'EBESExQVFhcYGRobHB0eHw');
  assert.deepEqual(sessionIdFromString('EBESExQVFhcYGRobHB0eHw'), SESSION_ID);
  for (const bad of ['EBESExQVFhcYGRobHB0eH', 'EBESExQVFhcYGRobHB0eHx', 'EBESExQVFhcYGRobHB0eHw==', 'EBESExQVFhcYGRobHB0e+w', '']) {
    assertRelayError(() => sessionIdFromString(bad), ErrorCodes.MESSAGE_INVALID);
  }
  assertRelayError(() => sessionIdToString(Buffer.alloc(17)), ErrorCodes.INTERNAL);
});
