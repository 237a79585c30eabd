// Control-channel framing: an optional 8-byte preface, then frames of
// [payload length u32 BE][type u8][flags u8][payload]. The decoder is a pure state machine over
// bytes (no socket, no timer) so it can be tested by splitting every vector at every offset.
//
// Hostile-input rules, in the order the bytes arrive:
//  - the preface is checked byte by byte, so a client speaking another protocol is refused at the
//    first wrong byte, not after we have buffered 8 bytes of it;
//  - the length limit is decided the moment the 4 length bytes are in, before any payload is
//    buffered, so a peer cannot make us hold more than the limit;
//  - after an error the decoder is dead: the caller closes the connection, and any stray push
//    rethrows the same error instead of resynchronising on garbage.

import { ErrorCodes, RelayError } from '../../errors.js';
import {
  CONTROL_MAGIC,
  FRAME_HEADER_BYTES,
  FRAME_LENGTH_FIELD_MAX,
  PREFACE_BYTES,
  PROTOCOL_VERSION,
} from './constants.js';

export interface Frame {
  type: number;
  payload: Buffer;
}

/** Encodes one frame into a single buffer (one allocation, one copy of the payload). Control
 *  messages are small, so copying is cheaper than a writev of header and payload. */
export function encodeFrame(type: number, payload: Buffer): Buffer {
  if (!Number.isInteger(type) || type < 0 || type > 0xff) {
    throw new RelayError(ErrorCodes.INTERNAL, `frame type ${String(type)} is not an integer in 0..255`);
  }
  if (payload.length > FRAME_LENGTH_FIELD_MAX) {
    throw new RelayError(
      ErrorCodes.FRAME_TOO_LARGE,
      `frame payload length ${payload.length} exceeds limit ${FRAME_LENGTH_FIELD_MAX}`,
      { details: { length: payload.length, limit: FRAME_LENGTH_FIELD_MAX } },
    );
  }
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame[4] = type;
  frame[5] = 0; // flags: every bit reserved
  payload.copy(frame, FRAME_HEADER_BYTES);
  return frame;
}

// Decoder states. Plain numbers rather than strings: compared on every loop iteration.
const EXPECT_PREFACE = 0;
const EXPECT_HEADER = 1;
const EXPECT_PAYLOAD = 2;
type DecoderState = typeof EXPECT_PREFACE | typeof EXPECT_HEADER | typeof EXPECT_PAYLOAD;

/** Shared zero-length payload: a zero-length buffer cannot be mutated, so sharing it is safe and
 *  spares an allocation per empty frame. */
const EMPTY_PAYLOAD = Buffer.alloc(0);

function hex(byte: number): string {
  return `0x${byte.toString(16).padStart(2, '0')}`;
}

function checkLimit(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n > FRAME_LENGTH_FIELD_MAX) {
    throw new RelayError(ErrorCodes.INTERNAL, `${what} ${String(n)} is not an integer in 0..${FRAME_LENGTH_FIELD_MAX}`);
  }
}

export class FrameDecoder {
  #maxPayloadBytes: number;
  #state: DecoderState;
  /** Preface bytes checked so far. */
  #prefaceSeen = 0;
  /** Scratch space for a header that arrives split across chunks; reused for every frame. */
  readonly #header = Buffer.alloc(FRAME_HEADER_BYTES);
  #headerSeen = 0;
  #payloadLength = 0;
  #type = 0;
  /** Payload under assembly when it spans chunks; allocated once at its final size so each byte is
   *  copied exactly once (no concat-as-you-go, which is quadratic). Bounded by the length limit. */
  #payload: Buffer | null = null;
  #payloadSeen = 0;
  #error: RelayError | null = null;

  constructor(opts: { maxPayloadBytes: number; expectPreface: boolean }) {
    checkLimit(opts.maxPayloadBytes, 'maxPayloadBytes');
    this.#maxPayloadBytes = opts.maxPayloadBytes;
    this.#state = opts.expectPreface ? EXPECT_PREFACE : EXPECT_HEADER;
  }

  /** Raises (or lowers) the payload limit, e.g. from 1 KiB to 64 KiB once the peer is authenticated.
   *  Applies to every frame whose length has not been read yet. */
  setMaxPayloadBytes(n: number): void {
    checkLimit(n, 'maxPayloadBytes');
    this.#maxPayloadBytes = n;
  }

  /** Bytes of an incomplete preface or frame held right now. Non-zero when the peer closes means it
   *  closed mid-frame, which the caller may want to report. */
  get bufferedBytes(): number {
    switch (this.#state) {
      case EXPECT_PREFACE:
        return this.#prefaceSeen;
      case EXPECT_HEADER:
        return this.#headerSeen;
      case EXPECT_PAYLOAD:
        return FRAME_HEADER_BYTES + this.#payloadSeen;
    }
  }

  /** Feeds bytes; returns the frames completed by them, in order. Throws a RelayError on the first
   *  protocol violation; frames completed earlier in the same chunk are dropped with it, because the
   *  connection is being closed anyway. */
  push(chunk: Buffer): Frame[] {
    if (this.#error !== null) throw this.#error;
    try {
      return this.#consume(chunk);
    } catch (err) {
      this.#error =
        err instanceof RelayError
          ? err
          : new RelayError(ErrorCodes.INTERNAL, 'frame decoder failed unexpectedly', { cause: err });
      throw this.#error;
    }
  }

  #consume(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    const end = chunk.length;
    let offset = 0;
    while (offset < end) {
      switch (this.#state) {
        case EXPECT_PREFACE:
          this.#checkPrefaceByte(chunk[offset]!);
          offset += 1;
          if (this.#prefaceSeen === PREFACE_BYTES) this.#state = EXPECT_HEADER;
          break;

        case EXPECT_HEADER:
          if (this.#headerSeen === 0 && end - offset >= FRAME_HEADER_BYTES) {
            // Fast path: the whole header is in this chunk, read it in place.
            this.#acceptLength(chunk.readUInt32BE(offset));
            this.#acceptTypeAndFlags(chunk[offset + 4]!, chunk[offset + 5]!);
            offset += FRAME_HEADER_BYTES;
          } else {
            // Slow path: collect the header a byte at a time, deciding each field as soon as it is in.
            this.#header[this.#headerSeen] = chunk[offset]!;
            this.#headerSeen += 1;
            offset += 1;
            if (this.#headerSeen === 4) this.#acceptLength(this.#header.readUInt32BE(0));
            if (this.#headerSeen < FRAME_HEADER_BYTES) break;
            this.#headerSeen = 0;
            this.#acceptTypeAndFlags(this.#header[4]!, this.#header[5]!);
          }
          offset = this.#startPayload(chunk, offset, frames);
          break;

        case EXPECT_PAYLOAD: {
          const payload = this.#payload!;
          const n = Math.min(end - offset, this.#payloadLength - this.#payloadSeen);
          chunk.copy(payload, this.#payloadSeen, offset, offset + n);
          this.#payloadSeen += n;
          offset += n;
          if (this.#payloadSeen === this.#payloadLength) {
            frames.push({ type: this.#type, payload });
            this.#payload = null;
            this.#payloadSeen = 0;
            this.#state = EXPECT_HEADER;
          }
          break;
        }
      }
    }
    return frames;
  }

  #checkPrefaceByte(byte: number): void {
    const i = this.#prefaceSeen;
    if (i < CONTROL_MAGIC.length) {
      const expected = CONTROL_MAGIC[i]!;
      if (byte !== expected) {
        throw new RelayError(
          ErrorCodes.BAD_MAGIC,
          `control preface byte ${i} is ${hex(byte)}, expected ${hex(expected)} (magic "${CONTROL_MAGIC.toString('latin1')}")`,
          { details: { offset: i, observed: byte, expected } },
        );
      }
    } else if (i === CONTROL_MAGIC.length) {
      if (byte !== PROTOCOL_VERSION) {
        throw new RelayError(
          ErrorCodes.UNSUPPORTED_VERSION,
          `peer protocol version ${byte} is not supported, this side speaks version ${PROTOCOL_VERSION}`,
          { details: { observed: byte, supported: PROTOCOL_VERSION } },
        );
      }
    } else if (byte !== 0) {
      throw new RelayError(
        ErrorCodes.FRAME_MALFORMED,
        `control preface reserved byte ${i} is ${hex(byte)}, must be 0x00`,
        { details: { offset: i, observed: byte } },
      );
    }
    this.#prefaceSeen = i + 1;
  }

  #acceptLength(length: number): void {
    if (length > this.#maxPayloadBytes) {
      throw new RelayError(
        ErrorCodes.FRAME_TOO_LARGE,
        `frame payload length ${length} exceeds limit ${this.#maxPayloadBytes}`,
        { details: { length, limit: this.#maxPayloadBytes } },
      );
    }
    this.#payloadLength = length;
  }

  #acceptTypeAndFlags(type: number, flags: number): void {
    if (flags !== 0) {
      throw new RelayError(
        ErrorCodes.FRAME_MALFORMED,
        `frame flags are ${hex(flags)} on a type ${type} frame, must be 0x00 (all bits reserved)`,
        { details: { type, flags } },
      );
    }
    this.#type = type;
  }

  /** Called right after a header: emits the frame at once when its payload is already here (as a
   *  view into the chunk, no copy), otherwise starts assembling it. Returns the new offset. */
  #startPayload(chunk: Buffer, offset: number, frames: Frame[]): number {
    const length = this.#payloadLength;
    if (length === 0) {
      frames.push({ type: this.#type, payload: EMPTY_PAYLOAD });
      return offset;
    }
    const available = chunk.length - offset;
    if (available >= length) {
      frames.push({ type: this.#type, payload: chunk.subarray(offset, offset + length) });
      return offset + length;
    }
    // allocUnsafe is fine: the buffer is only handed out once every byte has been written.
    const payload = Buffer.allocUnsafe(length);
    chunk.copy(payload, 0, offset);
    this.#payload = payload;
    this.#payloadSeen = available;
    this.#state = EXPECT_PAYLOAD;
    return chunk.length;
  }
}
