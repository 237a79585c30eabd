// The in-process data-port suites (and the embedding API's) run on an engine's listeners when the splice plane is built
// (the default). This file runs them again on the JS plane (Node's listeners and sockets), so
// that both planes are held to the same checks. The test process's plane is opened when the
// first white is built, which happens after this assignment.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { testDataPlane } from '../helpers/data-plane.js';

process.env.RELAY_DATA_PLANE = 'js';
await import('../engine/security.test.js');
await import('./hostile-data.test.js');
await import('./limits.test.js');
await import('./reload-live.test.js');
await import('./ports.test.js');
await import('../e2e/api.test.js');

it('ran the suites above on the JS plane', () => {
  const plane = testDataPlane();
  assert.equal(plane.name, 'js');
  assert.equal(plane.engine, null);
});
