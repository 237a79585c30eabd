import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ErrorCodes, RelayError } from '../../../src/errors.js';
import { DEFAULT_LIMITS } from '../../../src/limits.js';
import { FrameDecoder, type Frame } from '../../../src/engine/protocol/frames.js';
import {
  MESSAGE_LIMITS,
  MessageType,
  decodeMessage,
  encodeMessage,
  messageTypeName,
  type Message,
} from '../../../src/engine/protocol/messages.js';
import { sanitizeText, text } from '../../../src/engine/protocol/field-checks.js';
import { assertRelayError, hex } from './helpers.js';

const PROOF = 'yKCips8_gB4hPOPcv93wKmQxtXsL6CNqFOvz42CZh3s'; // 32 bytes
const SESSION = 'EBESExQVFhcYGRobHB0eHw'; // 16 bytes

const SAMPLES: Message[] = [
  { type: MessageType.HELLO, id: 'gray-1', pool: 4, reuse: 0, agent: 'relay/0.1.0' },
  { type: MessageType.HELLO, id: 'A.b_c-9', pool: 1024, reuse: 0, agent: '' },
  { type: MessageType.WHITE_PROOF, proof: PROOF },
  { type: MessageType.GRAY_PROOF, proof: PROOF },
  { type: MessageType.WELCOME, session: SESSION, dataPort: 7001, pool: 8, heartbeatMs: 5000, credits: 16, services: 'default' },
  { type: MessageType.WELCOME, session: SESSION, dataPort: 65_535, pool: 0, heartbeatMs: 600_000, credits: 0, services: 'ssh,web-2' },
  { type: MessageType.SERVICES, services: 'ssh,,web' },
  { type: MessageType.GRANT, upTo: 24 },
  { type: MessageType.GRANT, upTo: Number.MAX_SAFE_INTEGER },
  { type: MessageType.PING, t: 1_700_000_000_000 },
  { type: MessageType.PONG, t: 0 },
  { type: MessageType.BYE, code: 'RELAY_ERR_SHUTDOWN', reason: 'white is shutting down: "bye", à bientôt 👋' },
  { type: MessageType.BYE, code: '', reason: '' },
];

/** Goes through the real frame decoder, as the engine will. */
function roundTrip(msg: Message): Message {
  const frames = new FrameDecoder({ maxPayloadBytes: 65_536, expectPreface: false }).push(encodeMessage(msg));
  assert.equal(frames.length, 1);
  return decodeMessage(frames[0]!);
}

function frame(type: number, payload: string | Buffer): Frame {
  return { type, payload: typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload };
}

function assertInvalid(type: number, payload: string | Buffer, message?: RegExp): RelayError {
  return assertRelayError(() => decodeMessage(frame(type, payload)), ErrorCodes.MESSAGE_INVALID, message);
}

test('message type numbers are fixed', () => {
  assert.deepEqual(MessageType, { HELLO: 1, WHITE_PROOF: 2, GRAY_PROOF: 3, WELCOME: 4, GRANT: 5, PING: 6, PONG: 7, BYE: 8, SERVICES: 9 });
  assert.equal(messageTypeName(4), 'WELCOME');
  assert.equal(messageTypeName(42), 'type 42');
});

test('every message type round-trips', () => {
  for (const msg of SAMPLES) assert.deepEqual(roundTrip(msg), msg);
});

test('wire format is pinned: HELLO and WELCOME frames in hex', () => {
  assert.deepEqual(
    encodeMessage({ type: MessageType.HELLO, id: 'gray-1', pool: 4, reuse: 0, agent: 'relay/0.1.0' }),
    hex(
      '00000038 01 00 7b226964223a22677261792d31222c22706f6f6c223a342c227265757365223a302c226167656e74223a2272656c61792f' +
        '302e312e30227d',
    ),
  );
  assert.deepEqual(
    encodeMessage({ type: MessageType.WELCOME, session: SESSION, dataPort: 7001, pool: 8, heartbeatMs: 5000, credits: 16, services: 'ssh' }),
    hex(
      '00000070 04 00 7b2273657373696f6e223a2245424553457851564668635947526f62484230654877222c22646174615f706f7274' +
        '223a373030312c22706f6f6c223a382c226865617274626561745f6d73223a353030302c2263726564697473223a31362c227365' +
        '727669636573223a22737368227d',
    ),
  );
  assert.deepEqual(encodeMessage({ type: MessageType.PING, t: 1 }), hex('00000007 06 00 7b2274223a317d')); // {"t":1}
});

test('decoding accepts any key order and JSON whitespace', () => {
  assert.deepEqual(decodeMessage(frame(5, ' {\n "up_to" : 3 } ')), { type: MessageType.GRANT, upTo: 3 });
  assert.deepEqual(decodeMessage(frame(1, '{"agent":"x","reuse":0,"pool":2,"id":"g"}')), { type: 1, id: 'g', pool: 2, reuse: 0, agent: 'x' });
});

test('camelCase fields travel as snake_case keys', () => {
  const welcome = encodeMessage({ type: MessageType.WELCOME, session: SESSION, dataPort: 1, pool: 0, heartbeatMs: 100, credits: 0, services: 'default' });
  assert.deepEqual(Object.keys(JSON.parse(welcome.subarray(6).toString())), ['session', 'data_port', 'pool', 'heartbeat_ms', 'credits', 'services']);
  const grant = encodeMessage({ type: MessageType.GRANT, upTo: 3 });
  assert.deepEqual(JSON.parse(grant.subarray(6).toString()), { up_to: 3 });
  // The camelCase spelling is an unknown key on the wire.
  assertInvalid(5, '{"upTo":3}', /unknown key "upTo"/);
});

test('unknown types are refused with the type number', () => {
  for (const type of [0, 10, 100, 255]) assertInvalid(type, '{}', new RegExp(`^unknown message type ${type}$`));
});

test('payloads that are not a UTF-8 JSON object are refused', () => {
  for (const payload of ['', ' ', '{', '{"t":1,}', "{'t':1}", '{"t":1} x', 'nul']) assertInvalid(6, payload, /not valid JSON/);
  for (const payload of ['[]', '[{"t":1}]', '1', '"t"', 'null', 'true']) assertInvalid(6, payload, /must be a JSON object/);
  // Invalid UTF-8: a stray continuation byte, an overlong "/", an encoded surrogate, a truncated sequence.
  for (const bad of ['ff', 'c0af', 'eda080', 'e282']) {
    assertInvalid(8, Buffer.concat([Buffer.from('{"code":"a","reason":"'), hex(bad), Buffer.from('"}')]), /not valid UTF-8/);
  }
  // A byte-order mark is not silently dropped.
  assertInvalid(6, Buffer.concat([hex('efbbbf'), Buffer.from('{"t":1}')]), /not valid JSON/);
});

test('unknown, missing and duplicate keys are refused', () => {
  assertInvalid(6, '{"t":1,"x":2}', /PING payload has unknown key "x", allowed keys are t/);
  assertInvalid(6, '{}', /PING payload is missing key "t"/);
  assertInvalid(1, '{"id":"g","pool":1,"reuse":0}', /missing key "agent"/);
  assertInvalid(6, '{"t":1,"t":2}', /duplicate key/);
  assertInvalid(8, '{"code":"a","reason":"b","code":"c"}', /duplicate key/);
  // Colons, quotes and backslashes inside strings are not mistaken for members.
  assert.deepEqual(decodeMessage(frame(8, '{"code":"a:b","reason":"x\\":y\\\\:"}')), {
    type: MessageType.BYE,
    code: 'a:b',
    reason: 'x":y\\:',
  });
});

test('__proto__, constructor and prototype keys are refused and pollute nothing', () => {
  assertInvalid(6, '{"t":1,"__proto__":{"polluted":true}}', /forbidden key "__proto__"/);
  assertInvalid(6, '{"__proto__":1,"t":1}', /forbidden key "__proto__"/);
  assertInvalid(6, '{"t":1,"constructor":{"prototype":{"polluted":true}}}', /forbidden key "constructor"/);
  assertInvalid(6, '{"t":1,"prototype":1}', /forbidden key "prototype"/);
  assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
  assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'), false);
});

test('nested objects and arrays are refused', () => {
  assertInvalid(6, '{"t":{"a":1}}', /field "t" must be an integer >= 0, got an object/);
  assertInvalid(6, '{"t":[1]}', /got an array/);
  assertInvalid(8, '{"code":{},"reason":"r"}', /field "code" must be a string, got an object/);
});

test('numbers: wrong types, fractions, negatives and unsafe integers are refused', () => {
  for (const t of ['"1"', 'true', 'null', '1.5', '-1', '9007199254740992', '1e400', '-1e400']) {
    assertInvalid(6, `{"t":${t}}`, /field "t" must be an integer >= 0/);
  }
  assert.deepEqual(decodeMessage(frame(6, '{"t":9007199254740991}')), { type: 6, t: Number.MAX_SAFE_INTEGER });
  assert.deepEqual(decodeMessage(frame(7, '{"t":1.0}')), { type: 7, t: 1 }, 'JSON number spelling does not matter');
  assertInvalid(5, '{"up_to":-1}', /field "up_to"/);
  assertInvalid(5, '{"up_to":9007199254740992}', /field "up_to"/);
});

test('HELLO field rules', () => {
  const hello = (fields: Record<string, unknown>): string => JSON.stringify({ id: 'g', pool: 1, reuse: 0, agent: '', ...fields });
  for (const id of ['', 'x'.repeat(65), 'gray 1', 'gray/1', 'grä', 'a\u0000b', 7]) {
    assertInvalid(1, hello({ id }), /field "id" must be 1\.\.64 characters of \[A-Za-z0-9\._-\]/);
  }
  assert.equal(roundTrip({ type: 1, id: 'x'.repeat(64), pool: 1, reuse: 0, agent: '' }).type, 1);
  for (const pool of [0, 1025, -1, 2.5, '4']) assertInvalid(1, hello({ pool }), /field "pool" must be an integer in 1\.\.1024/);
  for (const reuse of [2, -1, 0.5, '1', true, null]) assertInvalid(1, hello({ reuse }), /field "reuse" must be an integer in 0\.\.1/);
  assert.equal((decodeMessage(frame(1, hello({ reuse: 1 }))) as { reuse: number }).reuse, 1);
  // agent: at most 64 UTF-8 bytes, no control characters, separators or lone surrogates.
  assert.deepEqual(decodeMessage(frame(1, hello({ agent: 'a'.repeat(64) }))), { type: 1, id: 'g', pool: 1, reuse: 0, agent: 'a'.repeat(64) });
  assertInvalid(1, hello({ agent: 'a'.repeat(65) }), /must be at most 64 UTF-8 bytes, got 65 bytes/);
  assert.equal(roundTrip({ type: 1, id: 'g', pool: 1, reuse: 0, agent: '🙂'.repeat(16) }).type, 1, '16 four-byte characters = 64 bytes');
  assertInvalid(1, hello({ agent: '🙂'.repeat(17) }), /got 68 bytes/);
  for (const agent of ['a\nb', 'a\rb', '\u001b[31m', 'a\u007fb', 'a\u0085b', 'a\u2028b', 'a\u2029b']) {
    assertInvalid(1, hello({ agent }), /must not contain control characters/);
  }
  assertInvalid(1, '{"id":"g","pool":1,"reuse":0,"agent":"\\ud800"}', /lone surrogates/);
  assertInvalid(1, '{"id":"g","pool":1,"reuse":0,"agent":"\\udc00x"}', /lone surrogates/);
});

test('proof fields must be canonical unpadded base64url of 32 bytes', () => {
  for (const type of [MessageType.WHITE_PROOF, MessageType.GRAY_PROOF]) {
    assert.deepEqual(decodeMessage(frame(type, JSON.stringify({ proof: PROOF }))), { type, proof: PROOF });
    for (const proof of [
      PROOF.slice(0, 42),
      `${PROOF}A`,
      `${PROOF}=`,
      `${PROOF.slice(0, 42)}t`, // non-zero unused low bits: a second spelling of nearly the same bytes
      `${PROOF.slice(0, 10)}+${PROOF.slice(11)}`,
      `${PROOF.slice(0, 10)}/${PROOF.slice(11)}`,
      `${PROOF.slice(0, 10)} ${PROOF.slice(11)}`,
      '',
      32,
    ]) {
      assertInvalid(type, JSON.stringify({ proof }), /field "proof" must be canonical unpadded base64url of 32 bytes/);
    }
  }
});

test('WELCOME field rules', () => {
  const base = { session: SESSION, data_port: 7001, pool: 8, heartbeat_ms: 5000, credits: 16, services: 'default' };
  const welcome = (fields: Record<string, unknown>): string => JSON.stringify({ ...base, ...fields });
  assert.equal(decodeMessage(frame(4, welcome({}))).type, 4);
  for (const session of [SESSION.slice(0, 21), `${SESSION}A`, `${SESSION.slice(0, 21)}x`, `${SESSION}==`]) {
    assertInvalid(4, welcome({ session }), /field "session" must be canonical unpadded base64url of 16 bytes/);
  }
  for (const data_port of [0, 65_536, -1, 80.5]) assertInvalid(4, welcome({ data_port }), /field "data_port" must be an integer in 1\.\.65535/);
  for (const pool of [-1, 1025]) assertInvalid(4, welcome({ pool }), /field "pool" must be an integer in 0\.\.1024/);
  for (const heartbeat_ms of [99, 600_001, 0]) {
    assertInvalid(4, welcome({ heartbeat_ms }), /field "heartbeat_ms" must be an integer in 100\.\.600000/);
  }
  for (const credits of [-1, 0.5, 2 ** 53]) assertInvalid(4, welcome({ credits }), /field "credits" must be an integer >= 0/);
  assertInvalid(4, welcome({ services: 'Web' }), /field "services" must be service names/);
  for (const [key, value] of [['data_port', 1], ['data_port', 65_535], ['heartbeat_ms', 100], ['heartbeat_ms', 600_000], ['pool', 0], ['pool', 1024]] as const) {
    assert.equal(decodeMessage(frame(4, welcome({ [key]: value }))).type, 4, `${key}=${value} is in range`);
  }
});

test('BYE field rules', () => {
  assert.equal(roundTrip({ type: 8, code: 'C'.repeat(64), reason: 'r'.repeat(256) }).type, 8);
  assertInvalid(8, JSON.stringify({ code: 'C'.repeat(65), reason: '' }), /field "code" must be at most 64 UTF-8 bytes/);
  assertInvalid(8, JSON.stringify({ code: '', reason: 'r'.repeat(257) }), /field "reason" must be at most 256 UTF-8 bytes, got 257/);
  assertInvalid(8, JSON.stringify({ code: '', reason: 'line1\nline2' }), /field "reason" must not contain control characters/);
});

test('the largest HELLO and BYE still fit the pre-auth frame limit', () => {
  // Quotes and backslashes double in JSON; control characters (6 bytes escaped) are not allowed.
  for (const filler of ['"', '\\', '🙂']) {
    const unit = Buffer.byteLength(filler);
    const agent = filler.repeat(Math.floor(MESSAGE_LIMITS.agentMaxBytes / unit));
    const hello = encodeMessage({ type: 1, id: 'x'.repeat(64), pool: 1024, reuse: 1, agent });
    const bye = encodeMessage({
      type: 8,
      code: filler.repeat(Math.floor(MESSAGE_LIMITS.byeCodeMaxBytes / unit)),
      reason: filler.repeat(Math.floor(MESSAGE_LIMITS.byeReasonMaxBytes / unit)),
    });
    for (const wire of [hello, bye]) assert.ok(wire.length - 6 <= DEFAULT_LIMITS.frameMaxBytesBeforeAuth, `${wire.length - 6} bytes`);
  }
});

test('encodeMessage refuses invalid messages as our own bug (INTERNAL)', () => {
  const bad: unknown[] = [
    { type: 1, id: '', pool: 1, reuse: 0, agent: '' },
    { type: 1, id: 'g', pool: 0, reuse: 0, agent: '' },
    { type: 2, proof: 'short' },
    { type: 4, session: SESSION, dataPort: 0, pool: 0, heartbeatMs: 100, credits: 0 },
    { type: 5, upTo: -1 },
    { type: 5 }, // missing field
    { type: 8, code: '', reason: 'x\n' },
    { type: 99 },
  ];
  for (const msg of bad) assertRelayError(() => encodeMessage(msg as Message), ErrorCodes.INTERNAL, /cannot encode/);
});

test('error messages do not reflect raw control characters from the peer', () => {
  const err = assertInvalid(6, '{"t":1,"\\u001b[2J\\n":2}');
  assert.doesNotMatch(err.message, /[\u0000-\u001f\u2028\u2029]/);
  const err2 = assertInvalid(1, '{"id":"g","pool":1,"reuse":0,"agent":"\\u2028"}');
  assert.doesNotMatch(err2.message, /[\u0000-\u001f\u2028\u2029]/);
});

test('sanitizeText makes any text acceptable as BYE reason', () => {
  const check = text(MESSAGE_LIMITS.byeReasonMaxBytes);
  assert.equal(sanitizeText('a\nb\u2028c', 256), 'a b c');
  assert.equal(sanitizeText('é'.repeat(200), 256), 'é'.repeat(128));
  assert.equal(sanitizeText('🙂🙂', 7), '🙂', 'cut at a code point boundary');
  fc.assert(
    // Any code point, lone surrogates included (fast-check's 'binary' unit is slow to generate).
    // Biased towards the troublesome ranges: C0/C1 controls, separators, surrogates.
    fc.property(
      fc
        .array(
          fc.oneof(
            fc.integer({ min: 0, max: 0xa0 }),
            fc.integer({ min: 0x2027, max: 0x202a }),
            fc.integer({ min: 0xd7ff, max: 0xe000 }),
            fc.integer({ min: 0, max: 0x10ffff }),
          ),
          { maxLength: 400 },
        )
        .map((cps) => String.fromCodePoint(...cps)),
      (s) => {
        assert.equal(check(sanitizeText(s, 256)), null);
      },
    ),
  );
});

test('random valid messages round-trip', () => {
  const counter = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
  const safeText = (maxBytes: number) =>
    fc.string({ unit: 'grapheme', maxLength: maxBytes }).map((s) => sanitizeText(s, maxBytes));
  const b64 = (bytes: number) => fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => Buffer.from(b).toString('base64url'));
  const arb: fc.Arbitrary<Message> = fc.oneof(
    fc.record({
      type: fc.constant(MessageType.HELLO),
      id: fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/),
      pool: fc.integer({ min: 1, max: 1024 }),
      reuse: fc.integer({ min: 0, max: 1 }),
      agent: safeText(64),
    }),
    fc.record({ type: fc.constant(MessageType.WHITE_PROOF), proof: b64(32) }),
    fc.record({ type: fc.constant(MessageType.GRAY_PROOF), proof: b64(32) }),
    fc.record({
      type: fc.constant(MessageType.WELCOME),
      session: b64(16),
      dataPort: fc.integer({ min: 1, max: 65_535 }),
      pool: fc.integer({ min: 0, max: 1024 }),
      heartbeatMs: fc.integer({ min: 100, max: 600_000 }),
      credits: counter,
      services: fc.uniqueArray(fc.stringMatching(/^[a-z0-9-]{1,32}$/), { minLength: 1, maxLength: 64 }).map((names) => names.join(',')),
    }),
    fc.record({ type: fc.constant(MessageType.SERVICES), services: fc.uniqueArray(fc.stringMatching(/^[a-z0-9-]{1,32}$/), { maxLength: 256 }).map((names) => names.join(',')) }),
    fc.record({ type: fc.constant(MessageType.GRANT), upTo: counter }),
    fc.record({ type: fc.constant(MessageType.PING), t: counter }),
    fc.record({ type: fc.constant(MessageType.PONG), t: counter }),
    fc.record({ type: fc.constant(MessageType.BYE), code: safeText(64), reason: safeText(256) }),
  );
  // fast-check builds null-prototype records; spread into plain objects for a strict deepEqual.
  fc.assert(fc.property(arb, (msg) => assert.deepEqual(roundTrip(msg), { ...msg })), { numRuns: 500 });
});

test('garbage payloads only ever produce MESSAGE_INVALID', () => {
  const payload = fc.oneof(
    fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
    fc.json().map((j) => Buffer.from(j)),
    fc.dictionary(fc.constantFrom('t', 'up_to', 'id', 'pool', 'agent', 'proof', 'code', 'reason', '__proto__'), fc.jsonValue(), { maxKeys: 4 })
      .map((o) => Buffer.from(JSON.stringify(o))),
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 12 }), payload, (type, bytes) => {
      try {
        decodeMessage({ type, payload: bytes });
      } catch (err) {
        assert.ok(err instanceof RelayError && err.code === ErrorCodes.MESSAGE_INVALID, String(err));
      }
    }),
    { numRuns: 2000 },
  );
});

test('service lists: names of a-z 0-9 -, empty positions, unique, at most 256 positions', () => {
  assert.deepEqual(decodeMessage(frame(9, '{"services":"ssh,,web-2"}')), { type: MessageType.SERVICES, services: 'ssh,,web-2' });
  assertInvalid(9, '{"services":"SSH"}', /service names/);
  assertInvalid(9, '{"services":"a b"}', /service names/);
  assertInvalid(9, '{"services":"ssh,ssh"}', /"ssh" twice/);
  assertInvalid(9, `{"services":"${'x'.repeat(33)}"}`, /service names/);
  assertInvalid(9, `{"services":"${','.repeat(256)}"}`, /at most 256 services, got 257/);
  assertInvalid(9, '{"services":["ssh"]}', /must be a string/);
  assert.equal(decodeMessage(frame(9, `{"services":"${','.repeat(255)}"}`)).type, MessageType.SERVICES);
});
