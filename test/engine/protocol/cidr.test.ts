// Allow-list matching: IPv4, IPv6, IPv4-mapped IPv6 as IPv4, prefix edges, empty list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allowed, parseCidr, type Cidr } from '../../../src/engine/protocol/cidr.js';

function list(...texts: string[]): Cidr[] {
  return texts.map((t) => {
    const p = parseCidr(t);
    assert.ok(p.ok, t);
    return p.value;
  });
}

test('an empty list allows every address', () => {
  assert.equal(allowed([], '192.0.2.1'), true);
  assert.equal(allowed([], '::1'), true);
});

test('IPv4 networks: inside, outside, the edges of a prefix that is not a byte boundary', () => {
  const l = list('203.0.113.0/24', '10.64.0.0/10');
  assert.equal(allowed(l, '203.0.113.255'), true);
  assert.equal(allowed(l, '203.0.114.0'), false);
  assert.equal(allowed(l, '10.64.0.0'), true);
  assert.equal(allowed(l, '10.127.255.255'), true);
  assert.equal(allowed(l, '10.128.0.0'), false);
  assert.equal(allowed(l, '10.63.255.255'), false);
});

test('IPv4-mapped IPv6 addresses match as IPv4, never an IPv6 network', () => {
  assert.equal(allowed(list('127.0.0.1'), '::ffff:127.0.0.1'), true);
  assert.equal(allowed(list('127.0.0.1'), '::ffff:127.0.0.2'), false);
  assert.equal(allowed(list('::ffff:0:0/96'), '::ffff:127.0.0.1'), false);
});

test('IPv6 networks; a zone id is ignored; an IPv6 client never matches an IPv4 network', () => {
  const l = list('2001:db8::/32', '::1');
  assert.equal(allowed(l, '2001:db8:ffff::1'), true);
  assert.equal(allowed(l, '2001:db9::1'), false);
  assert.equal(allowed(l, '::1'), true);
  assert.equal(allowed(list('fe80::/10'), 'fe80::1%eth0'), true);
  assert.equal(allowed(list('0.0.0.0/0'), '::1'), false);
  assert.equal(allowed(list('::/0'), '::1'), true);
  assert.equal(allowed(list('0.0.0.0/0'), '198.51.100.1'), true);
});

test('an unknown or unparsable address is refused by a non-empty list', () => {
  assert.equal(allowed(list('0.0.0.0/0'), undefined), false);
  assert.equal(allowed(list('0.0.0.0/0'), 'nonsense'), false);
});
