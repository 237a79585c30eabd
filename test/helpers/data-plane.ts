// The data plane of a test process: opened once, on first use, as RELAY_DATA_PLANE says (as
// relay white and relay gray do at startup), and shared by every white and gray the process
// builds, so tests can read the one engine's counts.
import { openDataPlane, type DataPlane } from '../../src/engine/substrate/data-plane.js';
import { Engine } from '../../src/engine/substrate/engine.js';

let plane: DataPlane | null = null;

/** Four engine threads (more than this 2-core machine has, which must be correct too) unless
 *  RELAY_ENGINE_THREADS says otherwise: every white and gray of the in-process tests pairs and
 *  moves bytes over several threads. */
export function testDataPlane(): DataPlane {
  plane ??= openDataPlane(4);
  return plane;
}

let engine: Engine | string | undefined;

/** An engine of one thread for the tests of the engine itself, which check one thread's order
 *  (the newest idle connection first, the oldest client waiting first, the events of one
 *  accept in sequence); its own, whatever RELAY_DATA_PLANE says (RELAY_DATA_PLANE=js runs them
 *  too). null when none can start (then noEngine() says why). */
export function testEngine(): Engine | null {
  engine ??= Engine.open(1);
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

/** The test process's plane as RELAY_DATA_PLANE says, but with one engine thread (testEngine's)
 *  when it is an engine: for the tests that check one thread's order through a white or gray. */
export function oneThreadDataPlane(): DataPlane {
  return testDataPlane().engine ? engineDataPlane() : testDataPlane();
}
