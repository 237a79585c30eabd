// Validators for the scalar fields of control messages. Each returns null when the value is valid,
// or a phrase stating the rule and the observed value, which messages.ts prefixes with the message
// and field name. Used both when decoding (peer input) and encoding (our own bugs), so the two
// sides can never disagree on what is valid.

import { decodeBase64urlExact } from './base64url.js';
import { GRAY_ID_PATTERN, SERVICE_NAME_PATTERN, SERVICE_SLOTS_MAX } from './constants.js';

export type FieldCheck = (value: unknown) => string | null;

/** Quotes peer-supplied text for an error message: JSON escaping makes control characters and lone
 *  surrogates visible (\n, \ud800), and the two separators JSON leaves raw are escaped too, so a
 *  log line stays one line. Truncated: error messages are not a place to reflect peer input. */
export function quote(value: string, maxChars = 40): string {
  const shown = value.length > maxChars ? `${value.slice(0, maxChars)}...` : value;
  return JSON.stringify(shown).replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

/** Short, log-safe description of an observed value. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return `string ${quote(value)} (${value.length} chars)`;
  if (typeof value === 'number') return String(value);
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : typeof value;
}

export function integerIn(min: number, max: number): FieldCheck {
  const rule = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in ${min}..${max}`;
  return (value) =>
    typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max
      ? null
      : `must be ${rule}, got ${describeValue(value)}`;
}

export const grayId: FieldCheck = (value) =>
  typeof value === 'string' && GRAY_ID_PATTERN.test(value)
    ? null
    : `must be 1..64 characters of [A-Za-z0-9._-], got ${describeValue(value)}`;

export function base64urlOf(bytes: number): FieldCheck {
  return (value) =>
    decodeBase64urlExact(value, bytes) !== null
      ? null
      : `must be canonical unpadded base64url of ${bytes} bytes, got ${describeValue(value)}`;
}

// Free text from the peer ends up in logs and in `relayctl show`. Control characters (newlines,
// ESC sequences) and line/paragraph separators would let a peer forge log lines or repaint a
// terminal; lone surrogates cannot be written as UTF-8 at all. In the 'u' regex mode a proper
// surrogate pair is one code point, so \p{Cs} only matches lone halves.
const UNSAFE_TEXT = /[\p{Cc}\p{Zl}\p{Zp}\p{Cs}]/u;

/** Free text bounded in UTF-8 bytes (not UTF-16 units): the byte bound is what keeps the largest
 *  pre-auth message under the 1 KiB frame limit whatever script the text is in. */
export function text(maxUtf8Bytes: number): FieldCheck {
  return (value) => {
    if (typeof value !== 'string') return `must be a string, got ${describeValue(value)}`;
    if (UNSAFE_TEXT.test(value)) {
      return `must not contain control characters, line separators or lone surrogates, got ${describeValue(value)}`;
    }
    const bytes = Buffer.byteLength(value, 'utf8');
    return bytes <= maxUtf8Bytes ? null : `must be at most ${maxUtf8Bytes} UTF-8 bytes, got ${bytes} bytes`;
  };
}

/** Makes arbitrary text (an error message, say) acceptable to `text(maxUtf8Bytes)`: unsafe
 *  characters become spaces and the result is cut at a code point boundary. For the engine, which
 *  puts its own error messages into BYE reasons. */
export function sanitizeText(value: string, maxUtf8Bytes: number): string {
  const cleaned = value.replace(new RegExp(UNSAFE_TEXT.source, 'gu'), ' ');
  if (Buffer.byteLength(cleaned, 'utf8') <= maxUtf8Bytes) return cleaned;
  let out = '';
  let used = 0;
  for (const codePoint of cleaned) {
    const size = Buffer.byteLength(codePoint, 'utf8');
    if (used + size > maxUtf8Bytes) break;
    out += codePoint;
    used += size;
  }
  return out;
}

/** A comma-separated list of service names (a table's empty positions allowed): at most
 *  SERVICE_SLOTS_MAX positions, names unique. */
export const serviceList: FieldCheck = (value) => {
  if (typeof value !== 'string') return `must be a string, got ${describeValue(value)}`;
  if (value.length > SERVICE_SLOTS_MAX * 33) return `must be at most ${SERVICE_SLOTS_MAX * 33} characters, got ${value.length}`;
  const names = value.split(',');
  if (names.length > SERVICE_SLOTS_MAX) return `must list at most ${SERVICE_SLOTS_MAX} services, got ${names.length}`;
  const seen = new Set<string>();
  for (const name of names) {
    if (name === '') continue;
    if (!SERVICE_NAME_PATTERN.test(name)) return `must be service names (1..32 of a-z 0-9 -) separated by commas, got ${describeValue(value)}`;
    if (seen.has(name)) return `names ${quote(name)} twice`;
    seen.add(name);
  }
  return null;
};
