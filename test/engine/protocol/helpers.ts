// Shared assertions for the protocol tests. (node --test also loads this file as a test file; it
// defines no tests, so it only shows up as one empty, passing entry.)

import assert from 'node:assert/strict';
import { RelayError, type ErrorCode } from '../../../src/errors.js';

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
