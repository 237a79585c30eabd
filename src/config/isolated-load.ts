// Loads a config in a short-lived worker thread. The YAML parser, ajv and the compiled schemas
// cost the long-running white and gray processes about 20 MB when loaded in their own heap, for
// work done once at start and once per reload; in a worker most of that leaves when it exits
// (measured: +22 MB in-process, +10 MB after a worker). The result crosses as a structured clone,
// so secrets are turned back into redacting Buffers and the whole is frozen again here.
import { Worker } from 'node:worker_threads';
import { ErrorCodes, RelayError, type ErrorCode } from '../errors.js';
import { deepFreeze } from './freeze.js';
import { redacted } from './secret.js';
import type { GrayConfig, WhiteConfig, WhiteOverrides } from './types.js';

type WorkerAnswer = { ok: true; config: unknown; warnings: string[] } | { ok: false; code: ErrorCode; message: string; details: Record<string, unknown> };

export interface IsolatedLoadOptions {
  /** Warnings about the file (inline secrets others can read) are pushed here. */
  readonly warnings?: string[];
  /** White only: command-line values that replace the file's keys (see WhiteOverrides). */
  readonly overrides?: WhiteOverrides;
}

function loadInWorker(kind: 'white' | 'gray', path: string, opts: IsolatedLoadOptions): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./load-worker.js', import.meta.url), { workerData: { kind, path, overrides: opts.overrides ?? {} } });
    worker.once('message', (answer: WorkerAnswer) => {
      void worker.terminate();
      if (answer.ok) {
        opts.warnings?.push(...answer.warnings);
        resolve(answer.config);
      }
      else reject(new RelayError(answer.code, answer.message, { details: answer.details }));
    });
    worker.once('error', (err) => reject(new RelayError(ErrorCodes.INTERNAL, `config worker failed: ${err.message}`, { cause: err })));
  });
}

function secretBuffer(value: unknown): Buffer {
  const bytes = value as Uint8Array;
  return redacted(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

export async function loadWhiteConfigIsolated(path: string, opts: IsolatedLoadOptions = {}): Promise<WhiteConfig> {
  const c = (await loadInWorker('white', path, opts)) as WhiteConfig & Record<string, unknown>;
  const config = {
    ...c,
    grays: c.grays.map((g) => ({ ...g, secret: secretBuffer(g.secret) })),
    hooks: c.hooks.map((h) => ({ ...h, secret: h.secret === null ? null : secretBuffer(h.secret) })),
    authorize: c.authorize === null ? null : { ...c.authorize, secret: c.authorize.secret === null ? null : secretBuffer(c.authorize.secret) },
  };
  return deepFreeze(config);
}

export async function loadGrayConfigIsolated(path: string, opts: IsolatedLoadOptions = {}): Promise<GrayConfig> {
  const c = (await loadInWorker('gray', path, opts)) as GrayConfig;
  return deepFreeze({ ...c, secret: secretBuffer(c.secret) });
}
