// The HAProxy configuration shown in docs/ha.md is accepted by haproxy itself (`haproxy -c`).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { haproxyBinary } from '../e2e/ha-harness.js';

it('docs/ha.md: the HAProxy configuration passes haproxy -c', async () => {
  const doc = await readFile(fileURLToPath(new URL('../../../docs/ha.md', import.meta.url)), 'utf8');
  const block = /```haproxy\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(block, 'docs/ha.md has a ```haproxy block');
  assert.match(block, /http-check send meth GET uri \/readyz\/gray\//);
  assert.match(block, /option redispatch/);
  assert.match(block, /retries \d/);
  const dir = await mkdtemp(join(tmpdir(), 'relay-haproxy-doc-'));
  try {
    const file = join(dir, 'haproxy.cfg');
    await writeFile(file, block);
    const check = spawnSync(haproxyBinary(), ['-c', '-f', file], { encoding: 'utf8' });
    assert.equal(check.status, 0, `${check.stdout}${check.stderr}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
