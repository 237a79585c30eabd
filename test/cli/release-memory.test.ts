// releaseMemory (src/cli/release-memory.ts, native/memory.cc): garbage that a burst of one-off
// work left in the V8 heap is given back at once, not at some later collection, and the call
// says so in the log with the resident sizes. BurstRelease: when the white does that after a
// burst of new clients.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import v8 from 'node:v8';
import { BurstRelease, releaseMemory } from '../../src/cli/release-memory.js';
import { engineDataPlane, noEngine } from '../helpers/data-plane.js';
import { createLogger } from '../../src/log.js';

describe('releaseMemory', { skip: noEngine() }, () => {
  it('collects what a burst left behind and logs the resident size before and after', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const logger = createLogger({ level: 'debug', destination: sink });
    // Held long enough to be promoted to the old generation, as startup's one-off objects are.
    let burst: Array<{ n: number; text: string }> | null = Array.from({ length: 400_000 }, (_, n) => ({ n, text: `item ${n} of the burst` }));
    assert.equal(burst.length, 400_000);
    burst = null;
    const before = v8.getHeapStatistics().total_heap_size;
    releaseMemory(engineDataPlane(), logger, 'test');
    const after = v8.getHeapStatistics().total_heap_size;
    assert.ok(before - after > 10 * 1024 * 1024, `heap ${(before / 1048576).toFixed(1)} MB -> ${(after / 1048576).toFixed(1)} MB: expected more than 10 MB back`);
    const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'memory released');
    assert.ok(logged, `no "memory released" line in ${lines.join('')}`);
    assert.equal(logged.after, 'test');
    assert.ok(Number(logged.rssAfterMB) < Number(logged.rssBeforeMB), `resident ${logged.rssBeforeMB} -> ${logged.rssAfterMB} MB`);
  });
});

describe('BurstRelease', () => {
  it('releases once a burst is over: not while clients arrive, not for a small one, once per burst', () => {
    let served = 0;
    let releases = 0;
    const burst = new BurstRelease(() => served, () => releases++, 100, 0);
    const checks: boolean[] = [];
    for (const arrived of [60, 50, 0, 0]) {
      served += arrived;
      checks.push(burst.check());
    }
    assert.deepEqual(checks, [false, false, true, false], 'released at the first quiet check after 110 clients, then not again');
    served += 40;  // a small burst
    assert.equal(burst.check(), false);
    assert.equal(burst.check(), false, '40 clients are no burst');
    served += 70;  // together with the 40 before: 110
    assert.equal(burst.check(), false);
    assert.equal(burst.check(), true);
    assert.equal(releases, 2);
  });

  it('releases when the arrivals fall to a trickle, and counts the trickle toward the next burst', () => {
    let served = 0;
    let releases = 0;
    const burst = new BurstRelease(() => served, () => releases++, 100, 5);
    const checks: boolean[] = [];
    // A burst, then a trickle at the quiet limit, then one over it: no silence anywhere.
    for (const arrived of [80, 30, 6, 5, 5, 5]) {
      served += arrived;
      checks.push(burst.check());
    }
    assert.deepEqual(checks, [false, false, false, true, false, false], '6 is still the burst, 5 is quiet');
    for (let i = 0; i < 17; i++) {
      served += 5;
      burst.check();
    }
    assert.equal(releases, 1, '95 clients of trickle since the release are no burst yet');
    served += 5;
    assert.equal(burst.check(), true, 'the 100th trickled client makes one, released at once because the check is quiet');
    assert.equal(releases, 2);
  });

  it('counts from where it started and takes a shrinking total (a removed gray) as no new clients', () => {
    let served = 5000;
    let releases = 0;
    const burst = new BurstRelease(() => served, () => releases++, 100, 0);
    assert.equal(burst.check(), false, 'clients served before it started are not a burst');
    served = 4000;
    assert.equal(burst.check(), false);
    served = 4150;
    assert.equal(burst.check(), false);
    assert.equal(burst.check(), true);
    assert.equal(releases, 1);
  });
});
