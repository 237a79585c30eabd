// diffWhiteConfigs: a pure comparison of two loaded configs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseWhiteConfig } from '../../src/config/load.js';
import { diffWhiteConfigs } from '../../src/config/diff.js';
import { generateSecret } from '../../src/config/secret.js';

const [A, B, C, D] = [generateSecret(), generateSecret(), generateSecret(), generateSecret()];

function white(grays: Array<[string, string, number, number]>, extra = ''): Promise<import('../../src/config/types.js').WhiteConfig> {
  const lines = grays.map(([id, s, p, d]) => `  - { id: ${id}, secret: "${s}", public_port: ${p}, data_port: ${d} }`);
  return parseWhiteConfig(`control: { listen: "0.0.0.0:7000" }\n${extra}grays:\n${lines.join('\n')}\n`, null);
}

test('identical configs: everything unchanged', async () => {
  const a = await white([['a', A, 1001, 1002], ['b', B, 1003, 1004]]);
  const b = await white([['a', A, 1001, 1002], ['b', B, 1003, 1004]]);
  assert.deepEqual(diffWhiteConfigs(a, b), { added: [], removed: [], changed: [], unchanged: ['a', 'b'], globalChanged: [] });
});

test('added, removed, ports changed, secret changed, both changed', async () => {
  const before = await white([['a', A, 1001, 1002], ['b', B, 1003, 1004], ['c', C, 1005, 1006], ['gone', D, 1007, 1008]]);
  const after = await white([['new', D, 1009, 1010], ['a', A, 1001, 1002], ['b', B, 1103, 1004], ['c', D, 1005, 1106]]);
  const d = diffWhiteConfigs(before, after);
  assert.deepEqual(d.added.map((g) => g.id), ['new']);
  assert.deepEqual(d.removed.map((g) => g.id), ['gone']);
  assert.deepEqual(d.unchanged, ['a']);
  assert.deepEqual(
    d.changed.map((c) => ({ id: c.after.id, ports: c.portsChanged, secret: c.secretChanged, from: c.before.services[0]!.publicPort, to: c.after.services[0]!.publicPort })),
    [
      { id: 'b', ports: true, secret: false, from: 1003, to: 1103 },
      { id: 'c', ports: true, secret: true, from: 1005, to: 1005 },
    ],
  );
  assert.deepEqual(d.globalChanged, []);
});

test('secret change alone is detected by value, not identity', async () => {
  const before = await white([['a', A, 1001, 1002]]);
  const same = await white([['a', A, 1001, 1002]]);
  const rotated = await white([['a', B, 1001, 1002]]);
  assert.notEqual(before.grays[0]!.secret, same.grays[0]!.secret);
  assert.deepEqual(diffWhiteConfigs(before, same).unchanged, ['a']);
  const d = diffWhiteConfigs(before, rotated);
  assert.equal(d.changed.length, 1);
  assert.equal(d.changed[0]!.secretChanged, true);
  assert.equal(d.changed[0]!.portsChanged, false);
});

test('moving a gray in the file is not a change', async () => {
  const before = await white([['a', A, 1001, 1002], ['b', B, 1003, 1004]]);
  const after = await white([['b', B, 1003, 1004], ['a', A, 1001, 1002]]);
  const d = diffWhiteConfigs(before, after);
  assert.deepEqual(d.unchanged, ['b', 'a']);
  assert.deepEqual([d.added, d.removed, d.changed], [[], [], []]);
});

test('global settings are named when they differ', async () => {
  const before = await white([['a', A, 1001, 1002]], 'log: { level: info }\n');
  const after = await white(
    [['a', A, 1001, 1002]],
    `log: { level: debug }\nlimits: { client_wait_ms: 5 }\nhooks: [{ url: "http://127.0.0.1/h", secret: "${C}" }]\nmetrics: { listen: "127.0.0.1:9100" }\n`,
  );
  assert.deepEqual(diffWhiteConfigs(before, after).globalChanged, ['hooks', 'metrics', 'log', 'limits']);
  const hookA = await white([], `hooks: [{ url: "http://127.0.0.1/h", secret: "${C}" }]\n`);
  const hookB = await white([], `hooks: [{ url: "http://127.0.0.1/h", secret: "${D}" }]\n`);
  const hookA2 = await white([], `hooks: [{ url: "http://127.0.0.1/h", secret: "${C}" }]\n`);
  assert.deepEqual(diffWhiteConfigs(hookA, hookB).globalChanged, ['hooks'], 'a hook secret change is a change');
  assert.deepEqual(diffWhiteConfigs(hookA, hookA2).globalChanged, []);
});
