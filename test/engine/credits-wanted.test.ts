// The white's credit policy (pool-broker.ts creditsWanted), case by case: the pool is kept at its
// target counting what is idle and in flight, and waiting clients add credits only beyond that.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { creditsWanted } from '../../src/engine/white/pool-broker.js';

it('credits wanted: the pool up to its target, and waiting clients only beyond what is idle or in flight', () => {
  const cases: [target: number, idle: number, inFlight: number, waiting: number, wanted: number][] = [
    [8, 8, 0, 0, 0], // full
    [8, 5, 0, 0, 3], // three used or gone: replace them
    [8, 5, 3, 0, 0], // their replacements are on the way
    [8, 0, 8, 3, 0], // three clients wait, eight connections are coming: each served brings its own replacement
    [8, 0, 2, 3, 7], // two coming: six for the pool, one for the client nothing reaches
    [0, 0, 0, 2, 2], // no pool: one credit per waiting client
    [4, 6, 0, 0, 0], // above target (surplus is closed elsewhere): nothing
  ];
  for (const [target, idle, inFlight, waiting, wanted] of cases) {
    assert.equal(creditsWanted(target, idle, inFlight, waiting), wanted, `target ${target}, idle ${idle}, in flight ${inFlight}, waiting ${waiting}`);
  }
});
