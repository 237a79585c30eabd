// Structured logs (pino): one JSON line per event, stable keys (gray, conn, client, code).
// Secrets are redacted by path as a second line of defence; the code never logs them on purpose.
import { pino, type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = ['secret', '*.secret', 'token', '*.token', 'proof', '*.proof', 'key', '*.key'];

export function createLogger(options: { level?: string; name?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  const level = process.env.RELAY_LOG_LEVEL ?? options.level ?? 'info';
  return pino(
    {
      level,
      ...(options.name ? { name: options.name } : {}),
      base: { pid: process.pid },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    (options.destination ?? process.stdout) as pino.DestinationStream,
  );
}

/** A logger that drops everything; for library use and tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
