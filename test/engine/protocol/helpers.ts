// Shared assertions for the protocol tests. (node --test also loads this file as a test file; it
// defines no tests, so it only shows up as one empty, passing entry.)

import assert from 'node:assert/strict';
import { RelayError, type ErrorCode } from '../../../src/errors.js';
import { formatIPv4, formatIPv6 } from '../../../src/engine/protocol/ip-address.js';
import type { ClientAddressInfo } from '../../../src/engine/protocol/start-header.js';

/** Runs fn, asserts it throws a RelayError with `code` (and a message matching `message` if given),
 *  and returns the error for further checks. */
export function assertRelayError(fn: () => unknown, code: ErrorCode, message?: RegExp): RelayError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown !== undefined, `expected ${code}, but nothing was thrown`);
  assert.ok(thrown instanceof RelayError, `expected a RelayError, got ${String(thrown)}`);
  assert.equal(thrown.code, code, `wrong code; message: ${thrown.message}`);
  if (message !== undefined) assert.match(thrown.message, message);
  return thrown;
}

export function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex');
}

/** Splits `buf` at the given cut points (any order, duplicates allowed: they yield empty chunks). */
export function splitAt(buf: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...cuts].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const point of points) {
    chunks.push(Buffer.from(buf.subarray(start, point))); // fresh copies, like socket chunks
    start = point;
  }
  chunks.push(Buffer.from(buf.subarray(start)));
  return chunks;
}

/** A PROXY v2 header read as the spec says, independent of the encoder (one header, whole). */
export function parseV2(buf: Buffer): ClientAddressInfo {
  assert.deepEqual(buf.subarray(0, 12), hex('0d0a0d0a000d0a515549540a'));
  assert.equal(buf[12], 0x21, 'version 2, PROXY command');
  const length = buf.readUInt16BE(14);
  assert.equal(buf.length, 16 + length);
  const v4 = buf[13] === 0x11;
  if (!v4) assert.equal(buf[13], 0x21, 'TCP over IPv4 or IPv6');
  const size = v4 ? 4 : 16;
  assert.equal(length, 2 * size + 4);
  const format = v4 ? formatIPv4 : formatIPv6;
  const ports = 16 + 2 * size;
  return {
    family: v4 ? 4 : 6,
    srcAddress: format(buf.subarray(16, 16 + size)),
    dstAddress: format(buf.subarray(16 + size, ports)),
    srcPort: buf.readUInt16BE(ports),
    dstPort: buf.readUInt16BE(ports + 2),
  };
}

/** A PROXY v1 line read as the spec says (one line with its CRLF). */
export function parseV1(buf: Buffer): ClientAddressInfo {
  const match = /^PROXY TCP([46]) (\S+) (\S+) (\d+) (\d+)\r\n$/.exec(buf.toString('latin1'));
  assert.ok(match, buf.toString('latin1'));
  return { family: Number(match[1]) as 4 | 6, srcAddress: match[2]!, dstAddress: match[3]!, srcPort: Number(match[4]), dstPort: Number(match[5]) };
}
