// Readable one-line logs for a terminal: pino's JSON lines become
//   12:03:04.567 INFO  gray connected gray=alpha remote=10.0.0.7:51234
// Used only when stdout is a TTY; files and pipes keep JSON for machines. No pino-pretty dependency:
// this is the whole of what relay needs.
import { Writable } from 'node:stream';

const LEVELS: Record<number, { name: string; color: string }> = {
  10: { name: 'TRACE', color: '\x1b[90m' },
  20: { name: 'DEBUG', color: '\x1b[36m' },
  30: { name: 'INFO ', color: '\x1b[32m' },
  40: { name: 'WARN ', color: '\x1b[33m' },
  50: { name: 'ERROR', color: '\x1b[31m' },
  60: { name: 'FATAL', color: '\x1b[35m' },
};
const RESET = '\x1b[0m';
const DIM = '\x1b[2m';

/** Keys shown elsewhere on the line, or noise on a terminal. */
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'v']);

export interface PrettyOptions {
  color?: boolean;
}

/** Format one pino JSON line; anything that is not a JSON object passes through unchanged. */
export function formatLogLine(line: string, opts: PrettyOptions = {}): string {
  let rec: unknown;
  try {
    rec = JSON.parse(line);
  } catch {
    return line;
  }
  if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) return line;
  const r = rec as Record<string, unknown>;
  const color = opts.color ?? false;

  const time = typeof r.time === 'number' ? clock(new Date(r.time)) : '--:--:--.---';
  const lv = typeof r.level === 'number' ? LEVELS[r.level] : undefined;
  const levelName = lv?.name ?? String(r.level ?? '?').toUpperCase().padEnd(5);
  const level = color && lv ? `${lv.color}${levelName}${RESET}` : levelName;
  const msg = typeof r.msg === 'string' ? oneLine(r.msg) : '';

  const fields: string[] = [];
  for (const [k, v] of Object.entries(r)) {
    if (SKIP.has(k) || v === undefined) continue;
    const text = `${k}=${fieldValue(k, v)}`;
    fields.push(color ? `${DIM}${k}=${RESET}${fieldValue(k, v)}` : text);
  }
  return [color ? `${DIM}${time}${RESET}` : time, level, msg, ...fields].filter((s) => s !== '').join(' ');
}

function clock(d: Date): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function oneLine(s: string): string {
  return s.replace(/\r?\n/g, '\\n');
}

function fieldValue(key: string, v: unknown): string {
  // pino serializes errors as { type, message, stack, ... }: on a terminal the type and message
  // say enough on one line; the stack is in the JSON logs when needed.
  if (key === 'err' && typeof v === 'object' && v !== null) {
    const e = v as { type?: unknown; message?: unknown; code?: unknown };
    const head = `${typeof e.type === 'string' ? e.type : 'Error'}: ${typeof e.message === 'string' ? e.message : ''}`;
    return JSON.stringify(typeof e.code === 'string' ? `${head} (${e.code})` : head);
  }
  if (typeof v === 'string') return /^[^\s"=\\]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return JSON.stringify(v);
}

/** A stream to give pino as its destination: splits on newlines and writes formatted lines. */
export function createPrettyStream(dest: NodeJS.WritableStream, opts: PrettyOptions = {}): Writable {
  let partial = '';
  return new Writable({
    decodeStrings: false,
    write(chunk: string | Buffer, _enc, cb) {
      partial += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
      let nl: number;
      let out = '';
      while ((nl = partial.indexOf('\n')) !== -1) {
        out += `${formatLogLine(partial.slice(0, nl), opts)}\n`;
        partial = partial.slice(nl + 1);
      }
      if (out === '') return cb();
      if (dest.write(out)) cb();
      else dest.once('drain', () => cb());
    },
    final(cb) {
      if (partial !== '') dest.write(`${formatLogLine(partial, opts)}\n`);
      partial = '';
      cb();
    },
  });
}
