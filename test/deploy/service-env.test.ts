// The environment relay is installed with: both systemd units and the container image set the
// same variables, with the values the bench starts relay with (bench/targets.ts,
// RELAY_SERVICE_ENV), so the bench's figures are those of relay as installed.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { RELAY_SERVICE_ENV } from '../../bench/targets.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const unitDir = join(root, 'deploy', 'systemd');

/** Every NAME=value an ENV instruction of the Dockerfile sets (continued lines joined). */
function dockerEnv(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const joined = text.replace(/\\\n\s*/g, ' ');
  for (const line of joined.split('\n')) {
    const m = /^ENV\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    for (const pair of m[1]!.trim().split(/\s+/)) {
      const eq = pair.indexOf('=');
      assert.ok(eq > 0, `ENV ${pair}: NAME=value form`);
      out.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
  }
  return out;
}

describe('the environment relay is installed with', () => {
  const expected = Object.entries(RELAY_SERVICE_ENV);

  it('is not empty (the checks below can fail)', () => {
    assert.ok(expected.length > 0);
  });

  for (const unit of readdirSync(unitDir).filter((f) => f.endsWith('.service'))) {
    it(`${unit} sets what the bench sets`, () => {
      const lines = readFileSync(join(unitDir, unit), 'utf8').split('\n').map((l) => l.trim());
      for (const [name, value] of expected) assert.ok(lines.includes(`Environment=${name}=${value}`), `${unit}: Environment=${name}=${value}`);
    });
  }

  it('the Dockerfile sets what the bench sets', () => {
    const env = dockerEnv(readFileSync(join(root, 'Dockerfile'), 'utf8'));
    assert.equal(env.get('RELAY_LOG_FORMAT'), 'json', 'the reader sees the ENV the image has');
    for (const [name, value] of expected) assert.equal(env.get(name), value, name);
  });
});
