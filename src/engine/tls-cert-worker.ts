// Runs in a short-lived worker thread: builds the white's in-memory TLS identity with node-forge
// and posts it back. Doing it here keeps forge (about 11 MB once loaded) out of the server's
// own heap for its whole life: the worker's isolate, and forge with it, is gone once it exits.
import { parentPort } from 'node:worker_threads';
import { buildIdentity } from './tls-identity.js';

const commonName = (process.env.RELAY_CERT_CN ?? '') || 'relay-white';
buildIdentity(commonName).then(
  (identity) => parentPort!.postMessage({ ok: true, identity }),
  (err: unknown) => parentPort!.postMessage({ ok: false, error: err instanceof Error ? err.message : String(err) }),
);
