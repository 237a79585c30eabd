// Worker thread body for isolated-load.ts: loads one config file with the full loader (yaml,
// ajv, secrets) and posts the plain result back, or the error's code, message and details.
import { parentPort, workerData } from 'node:worker_threads';
import { RelayError } from '../errors.js';
import { loadGrayConfig, loadWhiteConfig } from './load.js';
import type { WhiteOverrides } from './types.js';

const { kind, path, overrides } = workerData as { kind: 'white' | 'gray'; path: string; overrides: WhiteOverrides };
const warnings: string[] = [];
(kind === 'white' ? loadWhiteConfig(path, { warnings, overrides }) : loadGrayConfig(path, { warnings })).then(
  (config) => parentPort!.postMessage({ ok: true, config, warnings }),
  (err: unknown) =>
    parentPort!.postMessage({
      ok: false,
      code: err instanceof RelayError ? err.code : 'RELAY_ERR_INTERNAL',
      message: err instanceof Error ? err.message : String(err),
      details: err instanceof RelayError ? { ...err.details } : {},
    }),
);
