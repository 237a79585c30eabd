// One error module for the whole project. Callers match on `code`, never on the message.
// Messages state the observed value and the limit or rule that was crossed.
// Every code is documented in docs/errors.md; a test checks that the two lists agree.

export const ErrorCodes = {
  // usage and configuration (exit code 2)
  USAGE: 'RELAY_ERR_USAGE',
  CONFIG_READ: 'RELAY_ERR_CONFIG_READ',
  CONFIG_PARSE: 'RELAY_ERR_CONFIG_PARSE',
  CONFIG_INVALID: 'RELAY_ERR_CONFIG_INVALID',
  CONFIG_CONFLICT: 'RELAY_ERR_CONFIG_CONFLICT',
  SECRET_WEAK: 'RELAY_ERR_SECRET_WEAK',
  SECRET_SOURCE: 'RELAY_ERR_SECRET_SOURCE',
  GRAY_EXISTS: 'RELAY_ERR_GRAY_EXISTS',
  GRAY_UNKNOWN: 'RELAY_ERR_GRAY_UNKNOWN',
  PORTS_EXHAUSTED: 'RELAY_ERR_PORTS_EXHAUSTED',

  // control protocol
  FRAME_TOO_LARGE: 'RELAY_ERR_FRAME_TOO_LARGE',
  FRAME_MALFORMED: 'RELAY_ERR_FRAME_MALFORMED',
  BAD_MAGIC: 'RELAY_ERR_BAD_MAGIC',
  UNSUPPORTED_VERSION: 'RELAY_ERR_UNSUPPORTED_VERSION',
  MESSAGE_INVALID: 'RELAY_ERR_MESSAGE_INVALID',
  MESSAGE_UNEXPECTED: 'RELAY_ERR_MESSAGE_UNEXPECTED',
  AUTH_FAILED: 'RELAY_ERR_AUTH_FAILED',
  WHITE_PROOF_INVALID: 'RELAY_ERR_WHITE_PROOF_INVALID',
  HANDSHAKE_TIMEOUT: 'RELAY_ERR_HANDSHAKE_TIMEOUT',
  AUTH_TIMEOUT: 'RELAY_ERR_AUTH_TIMEOUT',
  HEARTBEAT_TIMEOUT: 'RELAY_ERR_HEARTBEAT_TIMEOUT',
  TLS_VERSION: 'RELAY_ERR_TLS_VERSION',
  SESSION_REPLACED: 'RELAY_ERR_SESSION_REPLACED',
  CONNECTION_LOST: 'RELAY_ERR_CONNECTION_LOST',
  GRAY_REMOVED: 'RELAY_ERR_GRAY_REMOVED',
  PORTS_UNBOUND: 'RELAY_ERR_PORTS_UNBOUND',
  SHUTDOWN: 'RELAY_ERR_SHUTDOWN',
  TOO_MANY_UNAUTHENTICATED: 'RELAY_ERR_TOO_MANY_UNAUTHENTICATED',

  // data connections
  PREAMBLE_INVALID: 'RELAY_ERR_PREAMBLE_INVALID',
  PREAMBLE_TIMEOUT: 'RELAY_ERR_PREAMBLE_TIMEOUT',
  PREAMBLE_REPLAY: 'RELAY_ERR_PREAMBLE_REPLAY',
  PREAMBLE_NO_CREDIT: 'RELAY_ERR_PREAMBLE_NO_CREDIT',
  PREAMBLE_UNKNOWN_SESSION: 'RELAY_ERR_PREAMBLE_UNKNOWN_SESSION',
  PREAMBLE_WRONG_SOURCE: 'RELAY_ERR_PREAMBLE_WRONG_SOURCE',
  START_HEADER_INVALID: 'RELAY_ERR_START_HEADER_INVALID',
  CLIENT_QUEUE_FULL: 'RELAY_ERR_CLIENT_QUEUE_FULL',
  CLIENT_WAIT_TIMEOUT: 'RELAY_ERR_CLIENT_WAIT_TIMEOUT',
  CLIENT_IDLE_TIMEOUT: 'RELAY_ERR_CLIENT_IDLE_TIMEOUT',
  GRAY_OFFLINE: 'RELAY_ERR_GRAY_OFFLINE',
  SERVICE_NOT_ON_GRAY: 'RELAY_ERR_SERVICE_NOT_ON_GRAY',
  SERVICE_NOT_ON_WHITE: 'RELAY_ERR_SERVICE_NOT_ON_WHITE',
  CLIENT_NOT_ALLOWED: 'RELAY_ERR_CLIENT_NOT_ALLOWED',
  TOO_MANY_CLIENTS: 'RELAY_ERR_TOO_MANY_CLIENTS',
  TARGET_UNREACHABLE: 'RELAY_ERR_TARGET_UNREACHABLE',
  TOO_MANY_OPEN_FILES: 'RELAY_ERR_TOO_MANY_OPEN_FILES',
  LOCAL_PORTS_EXHAUSTED: 'RELAY_ERR_LOCAL_PORTS_EXHAUSTED',

  // admin API and relayctl
  ADMIN_UNREACHABLE: 'RELAY_ERR_ADMIN_UNREACHABLE',
  ADMIN_REQUEST: 'RELAY_ERR_ADMIN_REQUEST',
  CONCURRENT_EDIT: 'RELAY_ERR_CONCURRENT_EDIT',

  // hooks
  HOOK_QUEUE_FULL: 'RELAY_ERR_HOOK_QUEUE_FULL',
  HOOK_DELIVERY: 'RELAY_ERR_HOOK_DELIVERY',
  HOOK_DENIED: 'RELAY_ERR_HOOK_DENIED',

  // anything else: a bug or an OS failure, always with a cause
  DATA_PLANE_UNAVAILABLE: 'RELAY_ERR_DATA_PLANE_UNAVAILABLE',
  LISTEN: 'RELAY_ERR_LISTEN',
  INTERNAL: 'RELAY_ERR_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class RelayError extends Error {
  readonly code: ErrorCode;
  /** Structured facts for logs (observed value, limit, path...). Never contains secrets. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RelayError';
    this.code = code;
    this.details = Object.freeze({ ...(options.details ?? {}) });
  }
}

export function isRelayError(err: unknown, code?: ErrorCode): err is RelayError {
  return err instanceof RelayError && (code === undefined || err.code === code);
}

/** Codes that mean "the user gave us something wrong" and map to exit status 2. */
const USAGE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCodes.USAGE,
  ErrorCodes.CONFIG_READ,
  ErrorCodes.CONFIG_PARSE,
  ErrorCodes.CONFIG_INVALID,
  ErrorCodes.CONFIG_CONFLICT,
  ErrorCodes.SECRET_WEAK,
  ErrorCodes.SECRET_SOURCE,
  ErrorCodes.GRAY_EXISTS,
  ErrorCodes.GRAY_UNKNOWN,
  ErrorCodes.PORTS_EXHAUSTED,
  ErrorCodes.DATA_PLANE_UNAVAILABLE,
]);

export function exitCodeFor(err: unknown): 1 | 2 {
  return err instanceof RelayError && USAGE_CODES.has(err.code) ? 2 : 1;
}
