// The white's credit policy (pool-broker.ts creditsWanted), case by case: the pool is kept at its
// target counting what is idle, in flight and (reused) coming back, and waiting clients add
// credits only beyond what is idle or in flight.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { creditsWanted } from '../../src/engine/white/pool-broker.js';

it('credits wanted: the pool up to its target, and waiting clients only beyond what is idle or in flight', () => {
  const cases: [target: number, idle: number, inFlight: number, waiting: number, wanted: number, returning?: number][] = [
    [8, 8, 0, 0, 0], // full
    [8, 5, 0, 0, 3], // three used or gone: replace them
    [8, 5, 3, 0, 0], // their replacements are on the way
    [8, 0, 8, 3, 0], // three clients wait, eight connections are coming: each served brings its own replacement
    [8, 0, 2, 3, 7], // two coming: six for the pool, one for the client nothing reaches
    [0, 0, 0, 2, 2], // no pool: one credit per waiting client
    [4, 6, 0, 0, 0], // above target (surplus is closed elsewhere): nothing
    // Reused data connections in pairs come back: they count toward the target...
    [8, 5, 0, 0, 0, 3], // three taken, all coming back: nothing
    [8, 5, 0, 0, 1, 2], // one of them recycled or gone meanwhile: replace it
    [8, 0, 0, 0, 0, 64], // sixty-four long pairs: the engine keeps the refill level idle by itself
    // ...but not toward waiting clients, whose pairs may last.
    [8, 0, 0, 3, 3, 8],
    [8, 0, 2, 3, 1, 8],
  ];
  for (const [target, idle, inFlight, waiting, wanted, returning = 0] of cases) {
    assert.equal(creditsWanted(target, idle, inFlight, waiting, returning), wanted, `target ${target}, idle ${idle}, in flight ${inFlight}, waiting ${waiting}, returning ${returning}`);
  }
});
