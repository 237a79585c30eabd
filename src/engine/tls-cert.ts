// The white's TLS identity, new at every start and in memory only. The certificate
// authenticates nothing by itself: authentication is the HMAC exchange bound to the TLS session
// (see protocol/auth.ts). It is here so the channel is encrypted; its fingerprint is logged so
// an operator can compare it with what a gray saw. It is built in a worker thread so that
// node-forge's code and heap leave with the worker instead of staying in the server.
import { Worker } from 'node:worker_threads';
import { ErrorCodes, RelayError } from '../errors.js';
import type { InMemoryIdentity } from './tls-identity.js';

export type { InMemoryIdentity } from './tls-identity.js';

export function createInMemoryIdentity(commonName = 'relay-white'): Promise<InMemoryIdentity> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./tls-cert-worker.js', import.meta.url), { env: { RELAY_CERT_CN: commonName } });
    worker.once('message', (m: { ok: true; identity: InMemoryIdentity } | { ok: false; error: string }) => {
      void worker.terminate();
      if (m.ok) resolve(m.identity);
      else reject(new RelayError(ErrorCodes.INTERNAL, `generating the TLS certificate failed: ${m.error}`));
    });
    worker.once('error', (err) => reject(new RelayError(ErrorCodes.INTERNAL, `certificate worker failed: ${err.message}`, { cause: err })));
  });
}
