// The compose example's config files are valid as shipped (the secret comes from RELAY_SECRET).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');

describe('compose example', () => {
  for (const file of ['white.yaml', 'gray.yaml']) {
    it(`deploy/compose/${file} passes relay verify`, () => {
      const run = spawnSync(process.execPath, [join(root, 'bin', 'relay'), 'verify', '--config', join(root, 'deploy', 'compose', file)], {
        encoding: 'utf8',
        env: { ...process.env, RELAY_SECRET: Buffer.alloc(32, 7).toString('base64url') },
      });
      assert.equal(run.status, 0, run.stderr);
      assert.match(run.stdout, /: valid (white|gray) config/);
    });
  }
});
