// releaseMemory (src/cli/release-memory.ts, native/memory.cc): garbage that a burst of one-off
// work left in the V8 heap is given back at once, not at some later collection, and the call
// says so in the log with the resident sizes.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import v8 from 'node:v8';
import { releaseMemory } from '../../src/cli/release-memory.js';
import { spliceUnavailableReason } from '../../src/engine/data-plane/splice-plane.js';
import { createLogger } from '../../src/log.js';

describe('releaseMemory', { skip: spliceUnavailableReason() ?? false }, () => {
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
    releaseMemory(logger, 'test');
    const after = v8.getHeapStatistics().total_heap_size;
    assert.ok(before - after > 10 * 1024 * 1024, `heap ${(before / 1048576).toFixed(1)} MB -> ${(after / 1048576).toFixed(1)} MB: expected more than 10 MB back`);
    const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'memory released');
    assert.ok(logged, `no "memory released" line in ${lines.join('')}`);
    assert.equal(logged.after, 'test');
    assert.ok(Number(logged.rssAfterMB) < Number(logged.rssBeforeMB), `resident ${logged.rssBeforeMB} -> ${logged.rssAfterMB} MB`);
  });
});
