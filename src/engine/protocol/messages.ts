// Control messages: one frame each, payload = a flat UTF-8 JSON object with snake_case keys.
// Validation is strict and table-driven: every message type has an exact list of fields, each with
// a checker; anything else (unknown, missing or duplicate keys, nesting, wrong types, out-of-range
// numbers, invalid UTF-8) is MESSAGE_INVALID. The same table drives encoding, so we can never send
// what the peer would refuse.

import { ErrorCodes, RelayError } from '../../errors.js';
import { encodeFrame, type Frame } from './frames.js';
import { PROOF_BYTES, SESSION_ID_BYTES } from './constants.js';
import { base64urlOf, grayId, integerIn, quote, serviceList, text, type FieldCheck } from './field-checks.js';

export const MessageType = {
  HELLO: 1,
  WHITE_PROOF: 2,
  GRAY_PROOF: 3,
  WELCOME: 4,
  GRANT: 5,
  PING: 6,
  PONG: 7,
  BYE: 8,
  SERVICES: 9,
} as const;

export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];

/** gray → white, first message: who I am, the idle pool I intend to keep, and whether my data
 *  connections can carry one client after another (reuse 1: framed after the start header, see
 *  start-header.ts; the white decides by the header it writes). */
export interface HelloMessage {
  type: typeof MessageType.HELLO;
  id: string;
  pool: number;
  reuse: number;
  agent: string;
}
/** white → gray: the white's proof of the gray's secret (sent first, so a fake white learns nothing). */
export interface WhiteProofMessage {
  type: typeof MessageType.WHITE_PROOF;
  proof: string;
}
/** gray → white: the gray's proof, sent only after it verified the white's. */
export interface GrayProofMessage {
  type: typeof MessageType.GRAY_PROOF;
  proof: string;
}
/** white → gray: session established; where to open data connections and with how many credits. */
export interface WelcomeMessage {
  type: typeof MessageType.WELCOME;
  session: string;
  dataPort: number;
  pool: number;
  heartbeatMs: number;
  credits: number;
  /** The white's names of this gray's services, comma-separated. */
  services: string;
}
/** Either way, after WELCOME. gray → white: the gray's service table, comma-separated, a
 *  service's position being the index the white writes in its start headers; a removed
 *  service leaves its position empty, so an index is never given to another service within a
 *  session. white → gray: the white's names again, after a reload changed them. */
export interface ServicesMessage {
  type: typeof MessageType.SERVICES;
  services: string;
}
/** white → gray: cumulative credit; the gray may use preamble counters 1..upTo. */
export interface GrantMessage {
  type: typeof MessageType.GRANT;
  upTo: number;
}
export interface PingMessage {
  type: typeof MessageType.PING;
  t: number;
}
export interface PongMessage {
  type: typeof MessageType.PONG;
  t: number;
}
/** Either side, last message: why the connection is being closed (code is a RELAY_ERR_* code). */
export interface ByeMessage {
  type: typeof MessageType.BYE;
  code: string;
  reason: string;
}

export type Message =
  | HelloMessage
  | WhiteProofMessage
  | GrayProofMessage
  | WelcomeMessage
  | GrantMessage
  | PingMessage
  | PongMessage
  | ByeMessage
  | ServicesMessage;

/** Field limits, exported so the engine can clamp what it sends. Free text is bounded in UTF-8 bytes. */
export const MESSAGE_LIMITS = Object.freeze({
  poolMin: 1,
  poolMax: 1024,
  agentMaxBytes: 64,
  dataPortMin: 1,
  dataPortMax: 65_535,
  heartbeatMsMin: 100,
  heartbeatMsMax: 600_000,
  byeCodeMaxBytes: 64,
  byeReasonMaxBytes: 256,
});

interface FieldSpec {
  /** JSON key on the wire (snake_case). */
  readonly wire: string;
  /** Property in the TypeScript message (camelCase). */
  readonly prop: string;
  readonly check: FieldCheck;
}

interface MessageSpec {
  readonly name: string;
  readonly fields: readonly FieldSpec[];
  /** Wire keys, for the unknown-key check. */
  readonly keys: ReadonlySet<string>;
}

const counter = integerIn(0, Number.MAX_SAFE_INTEGER);

function spec(name: string, fields: FieldSpec[]): MessageSpec {
  return Object.freeze({ name, fields: Object.freeze(fields), keys: new Set(fields.map((f) => f.wire)) });
}

const SPECS: ReadonlyMap<number, MessageSpec> = new Map<number, MessageSpec>([
  [
    MessageType.HELLO,
    spec('HELLO', [
      { wire: 'id', prop: 'id', check: grayId },
      { wire: 'pool', prop: 'pool', check: integerIn(MESSAGE_LIMITS.poolMin, MESSAGE_LIMITS.poolMax) },
      { wire: 'reuse', prop: 'reuse', check: integerIn(0, 1) },
      { wire: 'agent', prop: 'agent', check: text(MESSAGE_LIMITS.agentMaxBytes) },
    ]),
  ],
  [MessageType.WHITE_PROOF, spec('WHITE_PROOF', [{ wire: 'proof', prop: 'proof', check: base64urlOf(PROOF_BYTES) }])],
  [MessageType.GRAY_PROOF, spec('GRAY_PROOF', [{ wire: 'proof', prop: 'proof', check: base64urlOf(PROOF_BYTES) }])],
  [
    MessageType.WELCOME,
    spec('WELCOME', [
      { wire: 'session', prop: 'session', check: base64urlOf(SESSION_ID_BYTES) },
      {
        wire: 'data_port',
        prop: 'dataPort',
        check: integerIn(MESSAGE_LIMITS.dataPortMin, MESSAGE_LIMITS.dataPortMax),
      },
      // 0 is allowed here (unlike HELLO): the white may tell a gray to keep no idle pool at all.
      { wire: 'pool', prop: 'pool', check: integerIn(0, MESSAGE_LIMITS.poolMax) },
      {
        wire: 'heartbeat_ms',
        prop: 'heartbeatMs',
        check: integerIn(MESSAGE_LIMITS.heartbeatMsMin, MESSAGE_LIMITS.heartbeatMsMax),
      },
      { wire: 'credits', prop: 'credits', check: counter },
      { wire: 'services', prop: 'services', check: serviceList },
    ]),
  ],
  [MessageType.SERVICES, spec('SERVICES', [{ wire: 'services', prop: 'services', check: serviceList }])],
  [MessageType.GRANT, spec('GRANT', [{ wire: 'up_to', prop: 'upTo', check: counter }])],
  [MessageType.PING, spec('PING', [{ wire: 't', prop: 't', check: counter }])],
  [MessageType.PONG, spec('PONG', [{ wire: 't', prop: 't', check: counter }])],
  [
    MessageType.BYE,
    spec('BYE', [
      { wire: 'code', prop: 'code', check: text(MESSAGE_LIMITS.byeCodeMaxBytes) },
      { wire: 'reason', prop: 'reason', check: text(MESSAGE_LIMITS.byeReasonMaxBytes) },
    ]),
  ],
]);

/** Name of a message type for logs ("HELLO"), or "type N" when unknown. */
export function messageTypeName(type: number): string {
  return SPECS.get(type)?.name ?? `type ${type}`;
}

/** Keys that are never allowed even if a future message defined them: they are how prototype
 *  pollution sneaks in when an object is later merged or copied by other code. */
const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

// fatal: invalid UTF-8 is an error, not U+FFFD. ignoreBOM: a BOM is kept in the text, where
// JSON.parse rejects it, instead of being silently stripped.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function invalid(message: string, details: Record<string, unknown> = {}): RelayError {
  return new RelayError(ErrorCodes.MESSAGE_INVALID, message, { details });
}

/** Encodes a message as complete frame bytes (header + JSON). An invalid message is our own bug,
 *  hence INTERNAL rather than MESSAGE_INVALID (which blames the peer). */
export function encodeMessage(msg: Message): Buffer {
  const messageSpec = SPECS.get(msg.type);
  if (messageSpec === undefined) {
    throw new RelayError(ErrorCodes.INTERNAL, `cannot encode unknown message type ${String(msg.type)}`);
  }
  const source = msg as unknown as Record<string, unknown>;
  const wire: Record<string, unknown> = {};
  for (const field of messageSpec.fields) {
    const value = source[field.prop];
    const problem = field.check(value);
    if (problem !== null) {
      throw new RelayError(ErrorCodes.INTERNAL, `cannot encode ${messageSpec.name}: field "${field.prop}" ${problem}`);
    }
    wire[field.wire] = value;
  }
  return encodeFrame(msg.type, Buffer.from(JSON.stringify(wire), 'utf8'));
}

/** Validates and decodes one frame. Throws MESSAGE_INVALID on anything but an exact match. */
export function decodeMessage(frame: Frame): Message {
  const messageSpec = SPECS.get(frame.type);
  if (messageSpec === undefined) {
    throw invalid(`unknown message type ${frame.type}`, { type: frame.type });
  }
  const name = messageSpec.name;

  let json: string;
  try {
    json = UTF8.decode(frame.payload);
  } catch {
    throw invalid(`${name} payload (${frame.payload.length} bytes) is not valid UTF-8`, { type: frame.type });
  }

  let parsed: unknown;
  try {
    // JSON.parse defines keys as own data properties (even "__proto__"), so it cannot pollute a
    // prototype; the key checks below then reject anything not in the table.
    parsed = JSON.parse(json);
  } catch (err) {
    throw invalid(`${name} payload is not valid JSON: ${quote((err as Error).message, 120)}`, { type: frame.type });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw invalid(`${name} payload must be a JSON object, got ${Array.isArray(parsed) ? 'an array' : parsed === null ? 'null' : typeof parsed}`);
  }

  const record = parsed as Record<string, unknown>;
  const keys = Object.keys(record);
  for (const key of keys) {
    if (FORBIDDEN_KEYS.has(key)) throw invalid(`${name} payload has forbidden key ${quote(key)}`);
    if (!messageSpec.keys.has(key)) {
      throw invalid(
        `${name} payload has unknown key ${quote(key)}, allowed keys are ${[...messageSpec.keys].join(', ')}`,
      );
    }
  }

  const msg: Record<string, unknown> = { type: frame.type };
  for (const field of messageSpec.fields) {
    if (!Object.hasOwn(record, field.wire)) throw invalid(`${name} payload is missing key "${field.wire}"`);
    const value = record[field.wire];
    // Every field is a scalar, so this also rejects any nested object or array.
    const problem = field.check(value);
    if (problem !== null) throw invalid(`${name} field "${field.wire}" ${problem}`);
    msg[field.prop] = value;
  }

  // JSON.parse keeps the last of duplicate keys silently; a strict parser must not, or two
  // implementations could read different values from the same bytes.
  const members = countTopLevelMembers(json);
  if (members !== keys.length) {
    throw invalid(`${name} payload has ${members} members but ${keys.length} distinct keys (duplicate key)`);
  }

  return msg as unknown as Message;
}

/** Counts the members of a JSON object known to be valid and flat (all values scalars): each
 *  member has exactly one ':' outside string literals. Cheap, and only sound under that premise,
 *  which decodeMessage establishes before calling it. */
function countTopLevelMembers(json: string): number {
  let members = 0;
  let inString = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i += 1; // skip the escaped character, which may be a quote
      else if (c === 0x22 /* " */) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x3a /* : */) {
      members += 1;
    }
  }
  return members;
}
