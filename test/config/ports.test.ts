// Port helpers: range parsing, allocation, exhaustion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes, RelayError } from '../../src/errors.js';
import { allocatePorts, parsePortRange } from '../../src/config/ports.js';
import { parseHostPort, isLoopbackHost, formatHostPort } from '../../src/config/address.js';

test('parsePortRange', () => {
  assert.deepEqual(parsePortRange('20000-20999'), { ok: true, value: { from: 20000, to: 20999 } });
  assert.deepEqual(parsePortRange('5-5'), { ok: true, value: { from: 5, to: 5 } });
  assert.equal(parsePortRange('0-10').ok, false);
  assert.equal(parsePortRange('10-70000').ok, false);
  assert.equal(parsePortRange('10-5').ok, false);
  assert.equal(parsePortRange('10').ok, false);
});

test('allocatePorts takes the lowest free ports and fails with PORTS_EXHAUSTED', () => {
  const range = { from: 100, to: 105 };
  assert.deepEqual(allocatePorts(range, new Set([100, 102]), 2), [101, 103]);
  assert.deepEqual(allocatePorts(range, new Set([100, 101, 102, 103]), 2), [104, 105]);
  assert.throws(
    () => allocatePorts(range, new Set([100, 101, 102, 103, 104]), 2),
    (err: unknown) => err instanceof RelayError && err.code === ErrorCodes.PORTS_EXHAUSTED && /only 1 free port left, 2 needed/.test(err.message),
  );
  assert.throws(() => allocatePorts(range, new Set([100, 101, 102, 103, 104, 105]), 1), { code: ErrorCodes.PORTS_EXHAUSTED });
});

test('parseHostPort handles names, IPv4, bracketed IPv6 and refuses the rest', () => {
  assert.deepEqual(parseHostPort('white.example.com:7000'), { ok: true, value: { host: 'white.example.com', port: 7000 } });
  assert.deepEqual(parseHostPort('[::1]:7000'), { ok: true, value: { host: '::1', port: 7000 } });
  assert.deepEqual(parseHostPort('[::]:1'), { ok: true, value: { host: '::', port: 1 } });
  assert.deepEqual(parseHostPort('[fe80::1%eth0]:22'), { ok: true, value: { host: 'fe80::1%eth0', port: 22 } });
  assert.deepEqual(parseHostPort('10.0.0.1:65535'), { ok: true, value: { host: '10.0.0.1', port: 65535 } });
  for (const bad of ['::1:7000', 'host', 'host:', ':7000', 'host:0', 'host:65536', '[1.2.3.4]:80', 'a b:1', '999.1.1.1:80', '[::1]7000']) {
    assert.equal(parseHostPort(bad).ok, false, bad);
  }
  assert.equal(formatHostPort({ host: '::1', port: 7000 }), '[::1]:7000');
  assert.equal(formatHostPort({ host: '127.0.0.1', port: 7000 }), '127.0.0.1:7000');
});

test('isLoopbackHost', () => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1']) assert.ok(isLoopbackHost(h), h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.com', '128.0.0.1']) assert.ok(!isLoopbackHost(h), h);
});
