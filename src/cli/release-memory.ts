// Once startup or a reload is over, give back what that one-off work used (native/memory.cc
// says why a quiet server otherwise keeps it): the white drops from about 64 to 59 MB resident
// at idle. Only with the native plane, which has the call; the JS plane's own per-chunk
// allocations keep its heap collecting anyway. Logged at debug with the sizes, so the effect
// can be seen (log.level: debug).
import { resolveDataPlane } from '../engine/data-plane/join.js';
import { nativeEngine } from '../engine/data-plane/native-engine.js';
import type { Logger } from '../log.js';

export function releaseMemory(logger: Logger, after: string): void {
  if (resolveDataPlane().plane !== 'splice') return;
  const engine = nativeEngine();
  if (!engine) return;
  const before = process.memoryUsage.rss();
  const startedAt = performance.now();
  engine.releaseMemory();
  const mb = (bytes: number): number => Math.round(bytes / 104857.6) / 10;
  logger.debug({ after, rssBeforeMB: mb(before), rssAfterMB: mb(process.memoryUsage.rss()), tookMs: Math.round(performance.now() - startedAt) }, 'memory released');
}
