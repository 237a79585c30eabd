import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ErrorCodes } from '../../../src/errors.js';
import { CounterWindow } from '../../../src/engine/protocol/replay-window.js';
import { assertRelayError } from './helpers.js';

test('a new window has no credit', () => {
  const window = new CounterWindow();
  assert.equal(window.granted, 0);
  assert.equal(window.used, 0);
  assert.equal(window.accept(1), 'no-credit');
});

test('in-order counters are accepted up to the grant, then no-credit', () => {
  const window = new CounterWindow();
  window.grant(5);
  for (let c = 1; c <= 5; c++) assert.equal(window.accept(c), 'ok');
  assert.equal(window.accept(6), 'no-credit');
  assert.equal(window.used, 5);
  assert.equal(window.floor, 5);
  assert.equal(window.trackedCount, 0);
});

test('a counter refused for lack of credit is usable once credit arrives', () => {
  const window = new CounterWindow();
  window.grant(2);
  assert.equal(window.accept(3), 'no-credit');
  assert.equal(window.used, 0, 'no-credit does not consume');
  window.grant(3);
  assert.equal(window.accept(3), 'ok');
});

test('out-of-order counters are accepted once each and the floor catches up', () => {
  const window = new CounterWindow();
  window.grant(10);
  for (const c of [5, 3, 9]) assert.equal(window.accept(c), 'ok');
  assert.equal(window.floor, 0);
  assert.equal(window.trackedCount, 3);
  assert.equal(window.accept(1), 'ok');
  assert.equal(window.floor, 1);
  assert.equal(window.accept(2), 'ok');
  assert.equal(window.floor, 3, 'folded 3 in');
  assert.equal(window.accept(4), 'ok');
  assert.equal(window.floor, 5, 'folded 5 in');
  assert.equal(window.trackedCount, 1, 'only 9 remains above the floor');
  assert.equal(window.used, 6);
});

test('replays are refused, below the floor and above it', () => {
  const window = new CounterWindow();
  window.grant(10);
  assert.equal(window.accept(1), 'ok');
  assert.equal(window.accept(1), 'replay', 'at the floor');
  assert.equal(window.accept(7), 'ok');
  assert.equal(window.accept(7), 'replay', 'remembered above the floor');
  assert.equal(window.used, 2);
});

test('floor advancement keeps the set small', () => {
  const inOrder = new CounterWindow();
  inOrder.grant(10_000);
  for (let c = 1; c <= 10_000; c++) assert.equal(inOrder.accept(c), 'ok');
  assert.equal(inOrder.trackedCount, 0);
  assert.equal(inOrder.floor, 10_000);
  assert.equal(inOrder.used, 10_000);

  // Worst case: everything arrives in reverse; the set grows to granted - floor, then collapses.
  const reversed = new CounterWindow();
  reversed.grant(10_000);
  for (let c = 10_000; c >= 2; c--) assert.equal(reversed.accept(c), 'ok');
  assert.equal(reversed.trackedCount, 9_999);
  assert.equal(reversed.accept(1), 'ok');
  assert.equal(reversed.trackedCount, 0);
  assert.equal(reversed.floor, 10_000);
});

test('grant only grows and rejects invalid values', () => {
  const window = new CounterWindow();
  window.grant(10);
  window.grant(5);
  assert.equal(window.granted, 10);
  assert.equal(window.accept(8), 'ok', 'a stale lower grant took nothing back');
  window.grant(Number.MAX_SAFE_INTEGER);
  assert.equal(window.granted, Number.MAX_SAFE_INTEGER);
  assert.equal(window.accept(Number.MAX_SAFE_INTEGER), 'ok');
  for (const bad of [-1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1]) assertRelayError(() => window.grant(bad), ErrorCodes.INTERNAL);
  for (const bad of [0, -1, 1.5, Number.NaN]) assertRelayError(() => window.accept(bad), ErrorCodes.INTERNAL);
});

test('matches a naive model under random grants and accepts', () => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant('grant' as const), n: fc.integer({ min: 0, max: 60 }) }),
    fc.record({ kind: fc.constant('accept' as const), n: fc.integer({ min: 1, max: 64 }) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
      const window = new CounterWindow();
      const seen = new Set<number>();
      let granted = 0;
      for (const { kind, n } of ops) {
        if (kind === 'grant') {
          window.grant(n);
          granted = Math.max(granted, n);
        } else {
          const expected = seen.has(n) ? 'replay' : n > granted ? 'no-credit' : 'ok';
          if (expected === 'ok') seen.add(n);
          assert.equal(window.accept(n), expected);
        }
        assert.equal(window.granted, granted);
        assert.equal(window.used, seen.size);
        assert.ok(window.trackedCount <= window.granted - window.floor, 'memory bounded by granted - floor');
        for (let c = 1; c <= window.floor; c++) assert.ok(seen.has(c), 'everything under the floor was used');
      }
    }),
    { numRuns: 300 },
  );
});
