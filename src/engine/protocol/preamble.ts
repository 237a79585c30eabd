// The preamble: the first and only bytes a gray sends on a fresh data connection before the white
// pairs it with a client. Fixed size, so the white knows exactly how much to read and nothing from
// the payload stream can be mistaken for it:
//
//   'RLYD'(4) | session id (16) | counter u64 BE (8) | tag = HMAC-SHA256(dataKey, first 28 bytes) (32)
//
// The data key comes from the TLS session and is never sent, so a sniffer who saw a preamble
// cannot forge another one; replaying the same one is stopped by the counter window.

import { createHmac, timingSafeEqual } from 'node:crypto';
import { ErrorCodes, RelayError } from '../../errors.js';
import { decodeBase64urlExact, encodeBase64url } from './base64url.js';
import { SESSION_ID_BYTES } from './constants.js';

export const PREAMBLE_MAGIC: Buffer = Buffer.from('RLYD', 'latin1');
export const PREAMBLE_BYTES = 60;
const COUNTER_OFFSET = PREAMBLE_MAGIC.length + SESSION_ID_BYTES; // 20
const TAG_OFFSET = COUNTER_OFFSET + 8; // 28
const TAG_BYTES = 32;
const DATA_KEY_BYTES = 32;
const TWO_POW_32 = 0x1_0000_0000;

export interface PreambleFields {
  sessionId: Buffer;
  counter: number;
  tag: Buffer;
}

function preambleError(message: string, details: Record<string, unknown> = {}): RelayError {
  return new RelayError(ErrorCodes.PREAMBLE_INVALID, message, { details });
}

function checkDataKey(dataKey: Buffer): void {
  if (dataKey.length !== DATA_KEY_BYTES) {
    throw new RelayError(ErrorCodes.INTERNAL, `data key is ${dataKey.length} bytes, expected ${DATA_KEY_BYTES}`);
  }
}

function computeTag(dataKey: Buffer, preamble: Buffer): Buffer {
  return createHmac('sha256', dataKey).update(preamble.subarray(0, TAG_OFFSET)).digest();
}

export function encodePreamble(sessionId: Buffer, counter: number, dataKey: Buffer): Buffer {
  if (sessionId.length !== SESSION_ID_BYTES) {
    throw new RelayError(ErrorCodes.INTERNAL, `session id is ${sessionId.length} bytes, expected ${SESSION_ID_BYTES}`);
  }
  if (!Number.isSafeInteger(counter) || counter < 1) {
    throw new RelayError(ErrorCodes.INTERNAL, `preamble counter ${counter} is not an integer in 1..${Number.MAX_SAFE_INTEGER}`);
  }
  checkDataKey(dataKey);
  const preamble = Buffer.alloc(PREAMBLE_BYTES);
  PREAMBLE_MAGIC.copy(preamble, 0);
  sessionId.copy(preamble, PREAMBLE_MAGIC.length);
  // u64 as two u32 halves: exact for every safe integer, and no BigInt on a per-connection path.
  preamble.writeUInt32BE(Math.floor(counter / TWO_POW_32), COUNTER_OFFSET);
  preamble.writeUInt32BE(counter % TWO_POW_32, COUNTER_OFFSET + 4);
  computeTag(dataKey, preamble).copy(preamble, TAG_OFFSET);
  return preamble;
}

/** Splits a complete preamble into its fields (copies: they may outlive the buffer). Checks only
 *  structure; the tag is checked with preambleTagValid once the session's key is known. */
export function parsePreamble(buf: Buffer): PreambleFields {
  if (buf.length !== PREAMBLE_BYTES) {
    throw preambleError(`preamble is ${buf.length} bytes, expected exactly ${PREAMBLE_BYTES}`, { length: buf.length });
  }
  if (!buf.subarray(0, PREAMBLE_MAGIC.length).equals(PREAMBLE_MAGIC)) {
    throw preambleError(
      `preamble magic is 0x${buf.subarray(0, PREAMBLE_MAGIC.length).toString('hex')}, expected 0x${PREAMBLE_MAGIC.toString('hex')} ("RLYD")`,
    );
  }
  const high = buf.readUInt32BE(COUNTER_OFFSET);
  const low = buf.readUInt32BE(COUNTER_OFFSET + 4);
  // Safe integers are < 2^53, so the high half must fit in 21 bits.
  const maxHigh = Math.floor(Number.MAX_SAFE_INTEGER / TWO_POW_32);
  if (high > maxHigh) {
    throw preambleError(
      `preamble counter 0x${buf.subarray(COUNTER_OFFSET, TAG_OFFSET).toString('hex')} exceeds limit ${Number.MAX_SAFE_INTEGER}`,
    );
  }
  const counter = high * TWO_POW_32 + low;
  if (counter < 1) throw preambleError(`preamble counter is ${counter}, counters start at 1`, { counter });
  return {
    sessionId: Buffer.from(buf.subarray(PREAMBLE_MAGIC.length, COUNTER_OFFSET)),
    counter,
    tag: Buffer.from(buf.subarray(TAG_OFFSET, PREAMBLE_BYTES)),
  };
}

/** True iff the tag matches the first 28 bytes under dataKey. Compared in constant time so a
 *  stranger cannot learn the tag byte by byte from response timing. */
export function preambleTagValid(buf: Buffer, dataKey: Buffer): boolean {
  checkDataKey(dataKey);
  if (buf.length !== PREAMBLE_BYTES) return false;
  return timingSafeEqual(computeTag(dataKey, buf), buf.subarray(TAG_OFFSET, TAG_OFFSET + TAG_BYTES));
}

/** Accumulates a data connection's first bytes until the preamble is complete. The magic is
 *  checked byte by byte as it arrives, so junk from a scanner is cut off at its first byte. */
export class PreambleReader {
  #buffer: Buffer | null = null;
  #received = 0;
  #done = false;
  #error: RelayError | null = null;

  /** Bytes received so far (for a timeout message: "got 12 of 60 bytes"). */
  get receivedBytes(): number {
    return this.#received;
  }

  /** Returns the complete 60-byte preamble once it is in, null before. Throws PREAMBLE_INVALID on a
   *  wrong magic byte, and on any byte past the preamble: the gray must wait for the start header,
   *  so early data is a protocol violation (and would otherwise be lost or mis-framed). */
  push(chunk: Buffer): Buffer | null {
    if (this.#error !== null) throw this.#error;
    try {
      return this.#consume(chunk);
    } catch (err) {
      this.#error =
        err instanceof RelayError
          ? err
          : new RelayError(ErrorCodes.INTERNAL, 'preamble reader failed unexpectedly', { cause: err });
      throw this.#error;
    }
  }

  #consume(chunk: Buffer): Buffer | null {
    if (chunk.length === 0) return null;
    if (this.#done) {
      throw preambleError(`${chunk.length} bytes after the preamble, expected none before the start header`, {
        extra: chunk.length,
      });
    }
    const magicEnd = Math.min(PREAMBLE_MAGIC.length - this.#received, chunk.length);
    for (let i = 0; i < magicEnd; i++) {
      const position = this.#received + i;
      const byte = chunk[i]!;
      if (byte !== PREAMBLE_MAGIC[position]) {
        throw preambleError(
          `data connection byte ${position} is 0x${byte.toString(16).padStart(2, '0')}, expected 0x${PREAMBLE_MAGIC[position]!.toString(16)} (magic "RLYD")`,
          { offset: position, observed: byte },
        );
      }
    }
    const missing = PREAMBLE_BYTES - this.#received;
    if (chunk.length > missing) {
      throw preambleError(`${chunk.length - missing} bytes after the preamble, expected none before the start header`, {
        extra: chunk.length - missing,
      });
    }
    if (this.#received === 0 && chunk.length === PREAMBLE_BYTES) {
      // Common case: the whole preamble in one segment; keep it without copying.
      this.#received = PREAMBLE_BYTES;
      this.#done = true;
      return chunk;
    }
    this.#buffer ??= Buffer.alloc(PREAMBLE_BYTES);
    chunk.copy(this.#buffer, this.#received);
    this.#received += chunk.length;
    if (this.#received < PREAMBLE_BYTES) return null;
    this.#done = true;
    const complete = this.#buffer;
    this.#buffer = null;
    return complete;
  }
}

export function sessionIdToString(sessionId: Buffer): string {
  if (sessionId.length !== SESSION_ID_BYTES) {
    throw new RelayError(ErrorCodes.INTERNAL, `session id is ${sessionId.length} bytes, expected ${SESSION_ID_BYTES}`);
  }
  return encodeBase64url(sessionId);
}

export function sessionIdFromString(text: string): Buffer {
  const sessionId = decodeBase64urlExact(text, SESSION_ID_BYTES);
  if (sessionId === null) {
    throw new RelayError(
      ErrorCodes.MESSAGE_INVALID,
      `session id must be canonical unpadded base64url of ${SESSION_ID_BYTES} bytes, got ${typeof text === 'string' ? `${text.length} chars` : typeof text}`,
    );
  }
  return sessionId;
}
