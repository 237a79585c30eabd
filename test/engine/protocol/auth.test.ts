import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes } from '../../../src/errors.js';
import {
  EKM_BYTES,
  EKM_LABEL,
  decodeProof,
  deriveSessionKeys,
  encodeProof,
  proofsEqual,
} from '../../../src/engine/protocol/auth.js';
import { assertRelayError, hex } from './helpers.js';

const SECRET = Buffer.from(Array.from({ length: 32 }, (_, i) => i)); // 00 01 .. 1f
const EKM = Buffer.from(Array.from({ length: 32 }, (_, i) => 0x40 + i)); // 40 41 .. 5f

test('exporter parameters are fixed', () => {
  assert.equal(EKM_LABEL, 'EXPORTER-relay-v1');
  assert.equal(EKM_BYTES, 32);
});

test('derived keys match vectors computed independently (RFC 5869 HKDF-SHA256 in Python)', () => {
  // ikm = secret, salt = EKM, info = "relay/v1 <label>\0" + id, L = 32.
  const keys = deriveSessionKeys(SECRET, EKM, 'gray-1');
  assert.deepEqual(keys.whiteProof, hex('c8a0a2a6cf3f801e213ce3dcbfddf02a6431b57b0be8236a14ebf3e36099877b'));
  assert.deepEqual(keys.grayProof, hex('9c1eda4a8b56d2b85a691d888952d8b6c1bb838e8e1a1f88c33ce8bdce970d46'));
  assert.deepEqual(keys.dataKey, hex('6a75255b134bcf5f8dd13341a1c4174eb373927b42b285aba27cbc5ae3c0711d'));
  assert.equal(encodeProof(keys.whiteProof), 'yKCips8_gB4hPOPcv93wKmQxtXsL6CNqFOvz42CZh3s');
  assert.equal(encodeProof(keys.grayProof), 'nB7aSotW0rhaaR2IiVLYtsG7g46OGh-Iwzzovc6XDUY');
});

test('derivation is deterministic', () => {
  assert.deepEqual(deriveSessionKeys(SECRET, EKM, 'gray-1'), deriveSessionKeys(Buffer.from(SECRET), Buffer.from(EKM), 'gray-1'));
});

test('keys differ by label, by gray id, by keying material and by secret', () => {
  const base = deriveSessionKeys(SECRET, EKM, 'gray-1');
  const all = [base.whiteProof, base.grayProof, base.dataKey];
  assert.equal(new Set(all.map((k) => k.toString('hex'))).size, 3, 'white proof, gray proof and data key are distinct');

  const otherEkm = Buffer.from(EKM);
  otherEkm[31] = otherEkm[31]! ^ 1;
  const otherSecret = Buffer.from(SECRET);
  otherSecret[0] = otherSecret[0]! ^ 1;
  const variants = [
    deriveSessionKeys(SECRET, EKM, 'gray-2'),
    deriveSessionKeys(SECRET, EKM, 'gray-10'),
    deriveSessionKeys(SECRET, otherEkm, 'gray-1'),
    deriveSessionKeys(otherSecret, EKM, 'gray-1'),
  ];
  for (const variant of variants) {
    for (const key of [variant.whiteProof, variant.grayProof, variant.dataKey]) {
      for (const original of all) assert.equal(key.equals(original), false);
    }
  }
});

test('a man in the middle with two TLS sessions cannot relay a proof', () => {
  // Gray <-> MITM uses EKM A, MITM <-> white uses EKM B; both ends know the secret.
  const ekmA = Buffer.alloc(32, 0xa1);
  const ekmB = Buffer.alloc(32, 0xb2);
  const fromWhite = deriveSessionKeys(SECRET, ekmB, 'gray-1').whiteProof; // what the white sends on leg B
  const grayExpects = deriveSessionKeys(SECRET, ekmA, 'gray-1').whiteProof; // what the gray checks on leg A
  assert.equal(proofsEqual(grayExpects, fromWhite), false);
});

test('proofsEqual: equal, one bit off, wrong length', () => {
  const proof = deriveSessionKeys(SECRET, EKM, 'gray-1').grayProof;
  assert.equal(proofsEqual(proof, Buffer.from(proof)), true);
  for (let i = 0; i < proof.length; i++) {
    const flipped = Buffer.from(proof);
    flipped[i] = flipped[i]! ^ 0x01;
    assert.equal(proofsEqual(proof, flipped), false);
  }
  assert.equal(proofsEqual(proof, proof.subarray(0, 31)), false); // does not throw like timingSafeEqual
  assert.equal(proofsEqual(proof, Buffer.concat([proof, Buffer.alloc(1)])), false);
  assert.equal(proofsEqual(proof, Buffer.alloc(0)), false);
});

test('encodeProof / decodeProof round trip and strictness', () => {
  const proof = deriveSessionKeys(SECRET, EKM, 'gray-1').whiteProof;
  const text = encodeProof(proof);
  assert.equal(text.length, 43);
  assert.match(text, /^[A-Za-z0-9_-]{43}$/);
  assert.deepEqual(decodeProof(text), proof);
  for (const bad of [text.slice(1), `${text}A`, `${text}=`, `${text.slice(0, 42)}t`, text.replace('_', '/'), '']) {
    assertRelayError(() => decodeProof(bad), ErrorCodes.MESSAGE_INVALID, /canonical unpadded base64url of 32 bytes/);
  }
  assertRelayError(() => encodeProof(Buffer.alloc(31)), ErrorCodes.INTERNAL, /31 bytes, expected 32/);
});

test('weak secrets, wrong keying material and bad ids are refused', () => {
  assertRelayError(() => deriveSessionKeys(Buffer.alloc(15), EKM, 'g'), ErrorCodes.SECRET_WEAK, /120 bits, minimum is 128 bits/);
  assert.equal(deriveSessionKeys(Buffer.alloc(16, 1), EKM, 'g').dataKey.length, 32, '128 bits is enough');
  assertRelayError(() => deriveSessionKeys(SECRET, Buffer.alloc(16), 'g'), ErrorCodes.INTERNAL, /16 bytes, expected 32/);
  for (const id of ['', 'a\u0000b', 'x'.repeat(65), 'gray one']) {
    assertRelayError(() => deriveSessionKeys(SECRET, EKM, id), ErrorCodes.INTERNAL);
  }
});
