// The in-process data-port suites run on the native intake when the splice plane is built (the
// default). This file runs them again on Node's listeners, the intake of the JS data plane and
// of bind addresses that are not IPs, so that both intakes are held to the same checks. The
// plane is decided when the first white is built, which happens after this assignment.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { resolveDataPlane } from '../../src/engine/data-plane/join.js';
import { defaultIntake } from '../../src/engine/white/gray-endpoint.js';

process.env.RELAY_DATA_PLANE = 'js';
await import('../engine/security.test.js');
await import('./hostile-data.test.js');
await import('./limits.test.js');
await import('./reload-live.test.js');
await import('./ports.test.js');

it('ran the suites above on Node listeners', () => {
  assert.equal(resolveDataPlane().plane, 'js');
  assert.equal(defaultIntake('127.0.0.1'), 'node');
});
