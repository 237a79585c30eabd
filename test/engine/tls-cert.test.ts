// The white's certificate is built in a worker so that node-forge (about 11 MB of code and heap
// once loaded) never stays in the server: a value imported from its module into the main
// thread would load forge there for the process's whole life.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const certModule = fileURLToPath(new URL('../../src/engine/tls-cert.js', import.meta.url));

test('createInMemoryIdentity builds a certificate whose fingerprint is the one it reports, without loading node-forge in the calling thread', async () => {
  // A fresh process, so that no other test's imports count (a file, not -e: the worker inherits
  // the process's flags).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-cert-'));
  const file = path.join(dir, 'probe.mjs');
  const script = `
    import { createRequire } from 'node:module';
    const { createInMemoryIdentity } = await import(${JSON.stringify(certModule)});
    const identity = await createInMemoryIdentity('probe');
    const loaded = Object.keys(createRequire(import.meta.url).cache).filter((p) => p.includes('node-forge'));
    process.stdout.write(JSON.stringify({ identity, loaded }));
  `;
  fs.writeFileSync(file, script);
  const out = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, [file], { timeout: 30_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
  ).finally(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { identity, loaded } = JSON.parse(out) as { identity: { certPem: string; keyPem: string; fingerprint256: string }; loaded: string[] };
  assert.deepEqual(loaded, [], 'node-forge was loaded in the main thread');
  const cert = new X509Certificate(identity.certPem);
  assert.equal(identity.fingerprint256, cert.fingerprint256);
  assert.match(cert.subject, /CN=probe/);
});
