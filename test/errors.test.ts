// Every error code a user can meet is documented, and the docs list no code that does not exist.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { it } from 'node:test';
import { ErrorCodes, exitCodeFor, RelayError } from '../src/errors.js';

it('docs/errors.md lists exactly the codes in src/errors.ts', async () => {
  const doc = await readFile(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const documented = new Set([...doc.matchAll(/`(RELAY_ERR_[A-Z_]+)`/g)].map((m) => m[1]));
  const defined = new Set(Object.values(ErrorCodes));
  for (const code of defined) assert.ok(documented.has(code), `${code} is not documented in docs/errors.md`);
  for (const code of documented) assert.ok(defined.has(code as never), `docs/errors.md lists ${code}, which src/errors.ts does not define`);
});

it('maps config errors to exit 2 and everything else to exit 1', () => {
  assert.equal(exitCodeFor(new RelayError(ErrorCodes.CONFIG_INVALID, 'x')), 2);
  assert.equal(exitCodeFor(new RelayError(ErrorCodes.LISTEN, 'x')), 1);
  assert.equal(exitCodeFor(new Error('plain')), 1);
});
