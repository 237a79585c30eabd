import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ErrorCodes } from '../../../src/errors.js';
import { PROXY_V2_SIGNATURE, encodeProxyV1, encodeProxyV2 } from '../../../src/engine/protocol/proxy-protocol.js';
import { formatIPv4, formatIPv6 } from '../../../src/engine/protocol/ip-address.js';
import type { ClientAddressInfo } from '../../../src/engine/protocol/start-header.js';
import { assertRelayError, hex, parseV1, parseV2 } from './helpers.js';

const V4: ClientAddressInfo = { family: 4, srcAddress: '172.19.0.1', srcPort: 42_578, dstAddress: '172.19.0.3', dstPort: 80 };
const V6: ClientAddressInfo = { family: 6, srcAddress: '2001:db8::1', srcPort: 1234, dstAddress: '2001:db8::2', dstPort: 443 };

test('v1 lines', () => {
  assert.equal(encodeProxyV1(V4).toString('latin1'), 'PROXY TCP4 172.19.0.1 172.19.0.3 42578 80\r\n');
  assert.equal(encodeProxyV1(V6).toString('latin1'), 'PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n');
  assert.equal(
    encodeProxyV1({ family: 6, srcAddress: '::ffff:1.2.3.4', srcPort: 1, dstAddress: '::1', dstPort: 2 }).toString('latin1'),
    'PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n',
  );
  // Addresses are re-printed canonically.
  assert.equal(parseV1(encodeProxyV1({ ...V6, srcAddress: '2001:DB8:0:0:0:0:0:1' })).srcAddress, '2001:db8::1');
});

test('v1 lines stay within the spec maximum of 107 bytes', () => {
  const widest: ClientAddressInfo = {
    family: 6,
    srcAddress: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
    srcPort: 65_535,
    dstAddress: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
    dstPort: 65_535,
  };
  assert.equal(encodeProxyV1(widest).length, 104);
});

test('v2 header for a known IPv4 address matches a capture of HAProxy output', () => {
  assert.deepEqual(
    encodeProxyV2(V4),
    hex('0d0a0d0a000d0a515549540a 21 11 000c ac130001 ac130003 a652 0050'),
  );
});

test('v2 header for a known IPv6 address', () => {
  assert.deepEqual(
    encodeProxyV2(V6),
    hex(
      '0d0a0d0a000d0a515549540a 21 21 0024' +
        '20010db8000000000000000000000001 20010db8000000000000000000000002 04d2 01bb',
    ),
  );
  assert.deepEqual(PROXY_V2_SIGNATURE, hex('0d0a0d0a000d0a515549540a'));
});

test('v1 and v2 round-trip random infos', () => {
  const port = fc.integer({ min: 0, max: 65_535 });
  const v4 = fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b) => formatIPv4(Buffer.from(b)));
  const v6 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => formatIPv6(Buffer.from(b)));
  const info = fc.oneof(
    fc.record({ family: fc.constant(4 as const), srcAddress: v4, srcPort: port, dstAddress: v4, dstPort: port }),
    fc.record({ family: fc.constant(6 as const), srcAddress: v6, srcPort: port, dstAddress: v6, dstPort: port }),
  );
  fc.assert(
    fc.property(info, (i) => {
      assert.deepEqual(parseV2(encodeProxyV2(i)), { ...i });
      assert.deepEqual(parseV1(encodeProxyV1(i)), { ...i });
    }),
    { numRuns: 500 },
  );
});

test('invalid infos are refused, never written as a malformed header', () => {
  const bad: ClientAddressInfo[] = [
    { ...V4, srcAddress: '1.2.3.4\r\nPROXY TCP4 6.6.6.6' },
    { ...V4, srcAddress: '::1' },
    { ...V6, dstAddress: '1.2.3.4' },
    { ...V4, dstPort: 65_536 },
  ];
  for (const info of bad) {
    assertRelayError(() => encodeProxyV1(info), ErrorCodes.START_HEADER_INVALID);
    assertRelayError(() => encodeProxyV2(info), ErrorCodes.START_HEADER_INVALID);
  }
});
