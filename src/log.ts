// Structured logs (pino): one JSON line per event, stable keys (gray, conn, client, code).
// Secrets are redacted by path as a second line of defence; the code never logs them on purpose.
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { createPrettyStream } from './log-pretty.js';

export type { Logger };

export const REDACT_PATHS = ['secret', '*.secret', 'token', '*.token', 'proof', '*.proof', 'key', '*.key'];

/**
 * JSON lines for machines; a readable one-line format when stdout is a terminal (a person is
 * watching). RELAY_LOG_FORMAT=json|pretty forces either.
 */
export function createLogger(options: { level?: string; name?: string; destination?: NodeJS.WritableStream; guard?: LineGuard } = {}): Logger {
  const level = process.env.RELAY_LOG_LEVEL ?? options.level ?? 'info';
  const format = process.env.RELAY_LOG_FORMAT ?? (options.destination === undefined && process.stdout.isTTY ? 'pretty' : 'json');
  const sink = options.guard === undefined ? (options.destination ?? process.stdout) : guarded(options.destination ?? process.stdout, options.guard);
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

/**
 * Something else drawn on the terminal the logs go to (the console's prompt and what has been
 * typed) that must step aside while a log line is written, and come back after it.
 */
export interface LineGuard {
  aroundWrite(write: () => void): void;
}

function guarded(sink: NodeJS.WritableStream, guard: LineGuard): Writable {
  return new Writable({
    decodeStrings: false,
    write(chunk: string | Buffer, _enc, cb) {
      let flowing = true;
      guard.aroundWrite(() => {
        flowing = sink.write(chunk);
      });
      if (flowing) cb();
      else sink.once('drain', () => cb());
    },
  });
}
