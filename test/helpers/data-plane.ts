// The data plane of a test process: opened once, on first use, as RELAY_DATA_PLANE says (as
// relay white and relay gray do at startup), and shared by every white and gray the process
// builds, so tests can read the one engine's counts.
import { openDataPlane, type DataPlane } from '../../src/engine/substrate/data-plane.js';
import { Engine } from '../../src/engine/substrate/engine.js';

let plane: DataPlane | null = null;

/** One engine thread unless RELAY_ENGINE_THREADS says otherwise: the engine's own tests check
 *  one thread's order (the newest idle connection first, the oldest client waiting first);
 *  test/e2e/threads.test.ts checks several. */
export function testDataPlane(): DataPlane {
  plane ??= openDataPlane(1);
  return plane;
}

let engine: Engine | string | undefined;

/** An engine for the tests of the engine itself: the test process's data plane's when it has
 *  one (so counts cover both), else one of their own (RELAY_DATA_PLANE=js runs them too); null
 *  when none can start (then noEngine() says why). */
export function testEngine(): Engine | null {
  engine ??= testDataPlane().engine ?? Engine.open();
  return typeof engine === 'string' ? null : engine;
}

/** A skip reason for engine-only tests: false when there is an engine. */
export function noEngine(): string | false {
  return testEngine() ? false : `no engine: ${String(engine)}`;
}

/** A data plane on testEngine(), whatever RELAY_DATA_PLANE says (for tests of the engine plane
 *  that run in every test run). */
export function engineDataPlane(): DataPlane {
  const engine = testEngine();
  if (!engine) throw new Error(String(noEngine()));
  return { name: 'splice', engine, note: null };
}
