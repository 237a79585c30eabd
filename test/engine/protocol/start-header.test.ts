import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ErrorCodes } from '../../../src/errors.js';
import {
  START_HEADER_BYTES,
  clientAddressInfo,
  decodeStartHeader,
  encodeStartHeader,
  type ClientAddressInfo,
} from '../../../src/engine/protocol/start-header.js';
import { formatIPv4, formatIPv6 } from '../../../src/engine/protocol/ip-address.js';
import { assertRelayError, hex } from './helpers.js';

const V4: ClientAddressInfo = { family: 4, srcAddress: '203.0.113.7', srcPort: 51_234, dstAddress: '198.51.100.1', dstPort: 443 };
const V6: ClientAddressInfo = { family: 6, srcAddress: '2001:db8::1', srcPort: 1234, dstAddress: '2001:db8::2', dstPort: 443 };
const MAPPED: ClientAddressInfo = { family: 6, srcAddress: '::ffff:203.0.113.7', srcPort: 1, dstAddress: '::1', dstPort: 65_535 };

test('exact bytes of an IPv4 start header', () => {
  assert.equal(START_HEADER_BYTES, 40);
  assert.deepEqual(
    encodeStartHeader(V4, 0),
    hex(
      '02 04 c822 01bb 0000' +
        'cb007107 000000000000000000000000' + // 203.0.113.7, padded
        'c6336401 000000000000000000000000', // 198.51.100.1, padded
    ),
  );
  assert.deepEqual(
    encodeStartHeader(V6, 7),
    hex('02 06 04d2 01bb 0700 20010db8000000000000000000000001 20010db8000000000000000000000002'),
  );
});

test('the service index is one byte: 0..255 round-trip, anything else is refused', () => {
  for (const service of [0, 1, 63, 255]) assert.equal(decodeStartHeader(encodeStartHeader(V4, service)).service, service);
  for (const service of [-1, 256, 1.5]) assertRelayError(() => encodeStartHeader(V4, service), ErrorCodes.START_HEADER_INVALID, /service index/);
});

test('round trips: IPv4, IPv6, IPv4-mapped IPv6', () => {
  for (const info of [V4, V6, MAPPED]) assert.deepEqual(decodeStartHeader(encodeStartHeader(info, 3)), { ...info, service: 3 });
  // Non-canonical input text comes back canonical.
  const loose = { ...V6, srcAddress: '2001:DB8:0:0:0:0:0:1' };
  assert.equal(decodeStartHeader(encodeStartHeader(loose, 0)).srcAddress, '2001:db8::1');
});

test('random infos round-trip', () => {
  const port = fc.integer({ min: 0, max: 65_535 });
  const v4 = fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b) => formatIPv4(Buffer.from(b)));
  const v6 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => formatIPv6(Buffer.from(b)));
  const info = fc.oneof(
    fc.record({ family: fc.constant(4 as const), srcAddress: v4, srcPort: port, dstAddress: v4, dstPort: port }),
    fc.record({ family: fc.constant(6 as const), srcAddress: v6, srcPort: port, dstAddress: v6, dstPort: port }),
  );
  fc.assert(fc.property(info, fc.integer({ min: 0, max: 255 }), (i, service) => assert.deepEqual(decodeStartHeader(encodeStartHeader(i, service)), { ...i, service })), { numRuns: 500 });
});

test('decodeStartHeader refuses wrong length, version, family, reserved bits and IPv4 padding', () => {
  const good = encodeStartHeader(V4, 0);
  for (const length of [0, 39, 41]) {
    assertRelayError(() => decodeStartHeader(Buffer.alloc(length)), ErrorCodes.START_HEADER_INVALID, new RegExp(`${length} bytes, expected exactly 40`));
  }
  const mutate = (offset: number, value: number): Buffer => {
    const copy = Buffer.from(good);
    copy[offset] = value;
    return copy;
  };
  for (const version of [0, 1, 3]) assertRelayError(() => decodeStartHeader(mutate(0, version)), ErrorCodes.START_HEADER_INVALID, /version/);
  for (const family of [0, 5, 41]) assertRelayError(() => decodeStartHeader(mutate(1, family)), ErrorCodes.START_HEADER_INVALID, /family/);
  assertRelayError(() => decodeStartHeader(mutate(7, 1)), ErrorCodes.START_HEADER_INVALID, /reserved/);
  for (const offset of [12, 23, 28, 39]) {
    assertRelayError(() => decodeStartHeader(mutate(offset, 1)), ErrorCodes.START_HEADER_INVALID, /non-zero bytes after its 4 IPv4 bytes/);
  }
});

test('encodeStartHeader refuses inconsistent infos', () => {
  const bad: ClientAddressInfo[] = [
    { ...V4, srcAddress: '::1' },
    { ...V6, dstAddress: '1.2.3.4' },
    { ...V4, srcPort: 65_536 },
    { ...V4, dstPort: -1 },
    { ...V4, srcPort: 1.5 },
    { ...V4, family: 5 as 4 },
    { ...V6, srcAddress: 'fe80::1%eth0' },
  ];
  for (const info of bad) assertRelayError(() => encodeStartHeader(info, 0), ErrorCodes.START_HEADER_INVALID);
});

test('clientAddressInfo: same families pass through', () => {
  assert.deepEqual(clientAddressInfo({ address: '203.0.113.7', port: 51_234 }, { address: '198.51.100.1', port: 443 }), V4);
  assert.deepEqual(clientAddressInfo({ address: '2001:DB8::1', port: 1234 }, { address: '2001:db8:0::2', port: 443 }), V6);
});

test('clientAddressInfo: IPv4-mapped addresses become IPv4', () => {
  // A dual-stack listener reports IPv4 clients like this.
  assert.deepEqual(
    clientAddressInfo({ address: '::ffff:203.0.113.7', port: 51_234 }, { address: '::ffff:198.51.100.1', port: 443 }),
    V4,
  );
  assert.deepEqual(
    clientAddressInfo({ address: '::FFFF:cb00:7107', port: 51_234 }, { address: '198.51.100.1', port: 443 }),
    V4,
  );
});

test('clientAddressInfo: mixed families are both expressed as IPv6', () => {
  assert.deepEqual(clientAddressInfo({ address: '::ffff:1.2.3.4', port: 5 }, { address: '::1', port: 6 }), {
    family: 6,
    srcAddress: '::ffff:1.2.3.4',
    srcPort: 5,
    dstAddress: '::1',
    dstPort: 6,
  });
  assert.deepEqual(clientAddressInfo({ address: '2001:db8::7', port: 5 }, { address: '10.0.0.1', port: 6 }), {
    family: 6,
    srcAddress: '2001:db8::7',
    srcPort: 5,
    dstAddress: '::ffff:10.0.0.1',
    dstPort: 6,
  });
});

test('clientAddressInfo drops zone ids', () => {
  assert.equal(clientAddressInfo({ address: 'fe80::1%eth0', port: 1 }, { address: 'fe80::2%2', port: 2 }).srcAddress, 'fe80::1');
});

test('clientAddressInfo refuses missing or malformed addresses and ports', () => {
  assertRelayError(() => clientAddressInfo({ port: 1 }, { address: '1.2.3.4', port: 2 }), ErrorCodes.START_HEADER_INVALID, /source address is unknown/);
  assertRelayError(() => clientAddressInfo({ address: '1.2.3.4', port: 1 }, {}), ErrorCodes.START_HEADER_INVALID, /destination address is unknown/);
  assertRelayError(() => clientAddressInfo({ address: '1.2.3.4' }, { address: '1.2.3.4', port: 2 }), ErrorCodes.START_HEADER_INVALID, /source port undefined/);
  assertRelayError(() => clientAddressInfo({ address: 'localhost', port: 1 }, { address: '1.2.3.4', port: 2 }), ErrorCodes.START_HEADER_INVALID, /"localhost" is not an IP address/);
  assertRelayError(() => clientAddressInfo({ address: '1.2.3.4', port: 70_000 }, { address: '1.2.3.4', port: 2 }), ErrorCodes.START_HEADER_INVALID, /70000/);
});
