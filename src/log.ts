// Structured logs (pino): one JSON line per event, stable keys (gray, conn, client, code).
// Secrets are redacted by path as a second line of defence; the code never logs them on purpose.
import { pino, type Logger } from 'pino';
import { createPrettyStream } from './log-pretty.js';

export type { Logger };

export const REDACT_PATHS = ['secret', '*.secret', 'token', '*.token', 'proof', '*.proof', 'key', '*.key'];

/**
 * JSON lines for machines; a readable one-line format when stdout is a terminal (a person is
 * watching). RELAY_LOG_FORMAT=json|pretty forces either.
 */
export function createLogger(options: { level?: string; name?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  const level = process.env.RELAY_LOG_LEVEL ?? options.level ?? 'info';
  const format = process.env.RELAY_LOG_FORMAT ?? (options.destination === undefined && process.stdout.isTTY ? 'pretty' : 'json');
  const sink = options.destination ?? process.stdout;
  return pino(
    {
      level,
      ...(options.name ? { name: options.name } : {}),
      base: { pid: process.pid },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    (format === 'pretty' ? createPrettyStream(sink, { color: process.stdout.isTTY === true }) : sink) as pino.DestinationStream,
  );
}

/** A logger that drops everything; for library use and tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
