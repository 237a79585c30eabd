import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SocketAddress, isIPv4, isIPv6 } from 'node:net';
import fc from 'fast-check';
import {
  formatIPv4,
  formatIPv6,
  isIPv4Mapped,
  parseIPv4,
  parseIPv6,
} from '../../../src/engine/protocol/ip-address.js';

test('IPv4: strict dotted quad', () => {
  assert.deepEqual(parseIPv4('1.2.3.4'), Buffer.from([1, 2, 3, 4]));
  assert.deepEqual(parseIPv4('255.255.255.255'), Buffer.from([255, 255, 255, 255]));
  assert.deepEqual(parseIPv4('0.0.0.0'), Buffer.alloc(4));
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.-4', '1.2.3.4 ', ' 1.2.3.4', '0x1.2.3.4', '1..3.4', '1e2.1.1.1', '::1']) {
    assert.equal(parseIPv4(bad), null, bad);
  }
  assert.equal(formatIPv4(Buffer.from([10, 0, 0, 1])), '10.0.0.1');
});

test('IPv6: the text forms of RFC 4291', () => {
  const cases: Array<[string, string]> = [
    ['::', '00000000000000000000000000000000'],
    ['::1', '00000000000000000000000000000001'],
    ['1::', '00010000000000000000000000000000'],
    ['2001:db8::1', '20010db8000000000000000000000001'],
    ['2001:DB8:0:0:0:0:0:1', '20010db8000000000000000000000001'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
    ['1:2:3:4:5:6:7::', '00010002000300040005000600070000'],
    ['::2:3:4:5:6:7:8', '00000002000300040005000600070008'],
    ['::ffff:1.2.3.4', '00000000000000000000ffff01020304'],
    ['::ffff:102:304', '00000000000000000000ffff01020304'],
    ['64:ff9b::192.0.2.33', '0064ff9b0000000000000000c0000221'],
    ['1:2:3:4:5:6:1.2.3.4', '00010002000300040005000601020304'],
  ];
  for (const [text, bytes] of cases) assert.equal(parseIPv6(text)?.toString('hex'), bytes, text);
  for (const bad of [
    '', ':', ':::', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', 'g::', ':1::', '1::2:', '1.2.3.4',
    '1.2.3.4::', '::1.2.3', '::256.1.1.1', '1:2:3:4:5:6:7:1.2.3.4', 'fe80::1%eth0', ' ::1', '::1 ', '1:2:3:4:5:6:7:8::',
  ]) {
    assert.equal(parseIPv6(bad), null, bad);
  }
});

test('IPv6 formatting follows RFC 5952', () => {
  const cases: Array<[string, string]> = [
    ['20010db8000000000000000000000001', '2001:db8::1'],
    ['00000000000000000000000000000000', '::'],
    ['00000000000000000000000000000001', '::1'],
    ['00010000000000000000000000000000', '1::'],
    ['20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['20010db8000000000001000000000001', '2001:db8::1:0:0:1'], // first of two equal runs
    ['20010000000000010000000000000000', '2001:0:0:1::'], // the longer run wins
    ['00000000000000000000ffffc0000201', '::ffff:192.0.2.1'],
    ['abcd00ef000000000000000000000000', 'abcd:ef::'],
  ];
  for (const [bytes, text] of cases) assert.equal(formatIPv6(Buffer.from(bytes, 'hex')), text, bytes);
  assert.equal(isIPv4Mapped(Buffer.from('00000000000000000000ffff01020304', 'hex')), true);
  assert.equal(isIPv4Mapped(Buffer.from('00000000000000000000fffe01020304', 'hex')), false);
  assert.equal(isIPv4Mapped(Buffer.from('00000000000000000001ffff01020304', 'hex')), false);
});

test('random addresses: format is canonical per Node (libuv inet_ntop) and parses back', () => {
  // Bias towards zero groups so compression is exercised.
  const group = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff }));
  fc.assert(
    fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), (groups) => {
      const bytes = Buffer.alloc(16);
      groups.forEach((g, i) => bytes.writeUInt16BE(g, i * 2));
      const text = formatIPv6(bytes);
      assert.ok(isIPv6(text), text);
      assert.deepEqual(parseIPv6(text), bytes);
      // libuv prints "IPv4-compatible" ::a.b.c.d (deprecated, RFC 4291 2.5.5.1) in dotted form; RFC 5952 does not.
      const ipv4Compatible = groups.slice(0, 6).every((g) => g === 0) && groups[6] !== 0;
      if (!ipv4Compatible) assert.equal(new SocketAddress({ address: text, family: 'ipv6' }).address, text);
    }),
    { numRuns: 1000 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), (raw) => {
      const text = formatIPv4(Buffer.from(raw));
      assert.ok(isIPv4(text));
      assert.deepEqual(parseIPv4(text), Buffer.from(raw));
    }),
  );
});

test('parsers accept exactly what Node accepts (zone ids aside)', () => {
  // Random characters find junk; sequences of plausible tokens find the near misses.
  const chars = fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.'), maxLength: 24 });
  const token = fc.oneof(
    fc.integer({ min: 0, max: 0x1ffff }).map((n) => n.toString(16)),
    fc.integer({ min: 0, max: 300 }).map(String),
    fc.constantFrom(':', '::', '.', '0', '00000', '1.2.3.4', 'ffff'),
  );
  const tokens = fc.array(token, { maxLength: 16 }).map((parts) => parts.join(''));
  const joined = fc
    .array(fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16)), { minLength: 1, maxLength: 9 })
    .chain((groups) => fc.integer({ min: -1, max: groups.length }).map((gap) =>
      gap < 0 ? groups.join(':') : `${groups.slice(0, gap).join(':')}::${groups.slice(gap).join(':')}`));
  fc.assert(
    fc.property(fc.oneof(chars, tokens, joined), (text) => {
      assert.equal(parseIPv4(text) !== null, isIPv4(text), `IPv4 ${text}`);
      assert.equal(parseIPv6(text) !== null, isIPv6(text), `IPv6 ${text}`);
    }),
    { numRuns: 5000 },
  );
});
