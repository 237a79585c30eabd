// Wire constants of the control channel, shared by the white and the gray.
// Changing any of these is a protocol version change: bump PROTOCOL_VERSION with it.

/** First bytes on the control channel (after TLS). A fixed magic lets either side reject a peer
 *  that speaks something else (an HTTP client, a port scanner) before parsing any frame. */
export const CONTROL_MAGIC: Buffer = Buffer.from('RLYC', 'latin1');

/** Sent in the preface. A peer with another version is refused outright: there is no negotiation,
 *  because both ends ship from the same release and silent downgrades are a security risk. */
export const PROTOCOL_VERSION = 2;

/** magic(4) + version u8 + 3 reserved bytes that must be zero (room for future flags). */
export const PREFACE_BYTES = 8;

/** Frame header: payload length u32 BE, type u8, flags u8 (all flag bits reserved, must be 0). */
export const FRAME_HEADER_BYTES = 6;

/** Largest payload a u32 length can express; the configured limits are always far below it. */
export const FRAME_LENGTH_FIELD_MAX = 0xffff_ffff;

/** Gray ids appear in logs, file names of metrics and HKDF info strings: a conservative alphabet
 *  means no escaping anywhere and no NUL that could blur the label/id boundary in the HKDF info. */
export const GRAY_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

/** Service names: in WELCOME and SERVICES, metrics labels and webhook bodies, so a small
 *  alphabet that needs no escaping anywhere (and no comma, the lists' separator). */
export const SERVICE_NAME_PATTERN = /^[a-z0-9-]{1,32}$/;

/** Positions in a gray's service table within one session: the start header's one byte. */
export const SERVICE_SLOTS_MAX = 256;

/** Size of WHITE_PROOF / GRAY_PROOF values (an HKDF-SHA256 output), base64url on the wire. */
export const PROOF_BYTES = 32;

/** Session ids are random 128-bit values chosen by the white: unguessable, and short enough to
 *  travel in every data-connection preamble. */
export const SESSION_ID_BYTES = 16;

/** The 8-byte preface both sides send first. A fresh buffer each time so no caller can corrupt a
 *  shared one. */
export function encodePreface(): Buffer {
  const preface = Buffer.alloc(PREFACE_BYTES); // zero-filled: the reserved bytes stay 0
  CONTROL_MAGIC.copy(preface, 0);
  preface[CONTROL_MAGIC.length] = PROTOCOL_VERSION;
  return preface;
}
