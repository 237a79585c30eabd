// Port helpers: range parsing, allocation, exhaustion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes, RelayError } from '../../src/errors.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allocatePorts, ephemeralOverlap, ephemeralPortRange, parsePortRange } from '../../src/config/ports.js';
import { canListen } from '../../src/engine/listen.js';
import { parseHostPort, isLoopbackHost, formatHostPort } from '../../src/config/address.js';

test('parsePortRange', () => {
  assert.deepEqual(parsePortRange('20000-20999'), { ok: true, value: { from: 20000, to: 20999 } });
  assert.deepEqual(parsePortRange('5-5'), { ok: true, value: { from: 5, to: 5 } });
  assert.equal(parsePortRange('0-10').ok, false);
  assert.equal(parsePortRange('10-70000').ok, false);
  assert.equal(parsePortRange('10-5').ok, false);
  assert.equal(parsePortRange('10').ok, false);
});

test('allocatePorts takes the lowest free ports and fails with PORTS_EXHAUSTED', async () => {
  const range = { from: 100, to: 105 };
  assert.deepEqual(await allocatePorts(range, new Set([100, 102]), 2), [101, 103]);
  assert.deepEqual(await allocatePorts(range, new Set([100, 101, 102, 103]), 2), [104, 105]);
  await assert.rejects(
    allocatePorts(range, new Set([100, 101, 102, 103, 104]), 2),
    (err: unknown) => err instanceof RelayError && err.code === ErrorCodes.PORTS_EXHAUSTED && /only 1 free port left, 2 needed/.test(err.message),
  );
  await assert.rejects(allocatePorts(range, new Set([100, 101, 102, 103, 104, 105]), 1), { code: ErrorCodes.PORTS_EXHAUSTED });
});

test('allocatePorts skips a port held by another socket on this host', async () => {
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
  const held = (holder.address() as net.AddressInfo).port;
  try {
    const usable = (port: number): Promise<boolean> => canListen('127.0.0.1', port);
    // The next ports may be anyone's on a shared machine: the held one is skipped, whatever follows.
    const [port] = await allocatePorts({ from: held, to: Math.min(65535, held + 50) }, new Set(), 1, usable);
    assert.ok(port !== undefined && port > held);
    await assert.rejects(allocatePorts({ from: held, to: held }, new Set(), 1, usable), (err: unknown) => err instanceof RelayError && /1 more is held by other programs/.test(err.message));
  } finally {
    holder.close();
  }
});

test('ephemeralPortRange reads the kernel file; ephemeralOverlap warns only on an overlap', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'relay-ports-'));
  try {
    const file = join(dir, 'ip_local_port_range');
    await writeFile(file, '32768\t60999\n');
    const ephemeral = await ephemeralPortRange(file);
    assert.deepEqual(ephemeral, { from: 32768, to: 60999 });
    assert.equal(await ephemeralPortRange(join(dir, 'missing')), null);
    assert.match(ephemeralOverlap({ from: 39000, to: 39099 }, ephemeral) ?? '', /ports\.range 39000-39099 overlaps the kernel's ephemeral port range 32768-60999/);
    assert.match(ephemeralOverlap({ from: 30000, to: 32768 }, ephemeral) ?? '', /overlaps/);
    assert.equal(ephemeralOverlap({ from: 20000, to: 20999 }, ephemeral), null);
    assert.equal(ephemeralOverlap({ from: 61000, to: 61010 }, ephemeral), null);
    assert.equal(ephemeralOverlap({ from: 39000, to: 39099 }, null), null);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
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
