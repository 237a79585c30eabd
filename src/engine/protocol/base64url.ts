// Strict base64url (RFC 4648 section 5, no padding) for fixed-size binary values on the wire:
// proofs and session ids. Node's decoder is lenient (it skips invalid characters, accepts padding
// and ignores non-zero trailing bits), which would give one value several spellings; here exactly
// one spelling is accepted per value, so string comparisons and log lines are unambiguous.

const BASE64URL_ALPHABET = /^[A-Za-z0-9_-]*$/;

/** Number of characters of the unpadded base64url form of `bytes` bytes. */
export function base64urlLength(bytes: number): number {
  return Math.ceil((bytes * 4) / 3);
}

export function encodeBase64url(bytes: Buffer): string {
  return bytes.toString('base64url'); // Node emits no padding for base64url
}

/** Decodes `text` iff it is the canonical unpadded base64url spelling of exactly `bytes` bytes;
 *  returns null otherwise, so the caller words the error for its own context. */
export function decodeBase64urlExact(text: unknown, bytes: number): Buffer | null {
  if (typeof text !== 'string' || text.length !== base64urlLength(bytes) || !BASE64URL_ALPHABET.test(text)) {
    return null;
  }
  const decoded = Buffer.from(text, 'base64url');
  // Re-encoding catches non-zero unused bits in the last character (e.g. "...B" vs "...A").
  if (decoded.length !== bytes || decoded.toString('base64url') !== text) return null;
  return decoded;
}
