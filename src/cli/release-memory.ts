// Giving back memory that one-off work used (native/memory.cc says why a quiet server otherwise
// keeps it): once startup or a reload is over, and once a burst of new clients has passed. The
// white drops from about 64 to 57 MB resident after startup; a burst of thousands of new clients
// grows its heap by about 10 MB, which V8 returns only at some later full collection that a white
// whose bytes move in the engine may not run for a long time. Only with the native plane, which
// has the call. Logged at debug with the sizes, so the effect can be seen (log.level: debug).
import type { DataPlane } from '../engine/substrate/data-plane.js';
import type { Logger } from '../log.js';

export function releaseMemory(dataPlane: DataPlane, logger: Logger, after: string): void {
  const engine = dataPlane.engine;
  if (!engine) return;
  const before = process.memoryUsage.rss();
  const startedAt = performance.now();
  engine.releaseMemory();
  const mb = (bytes: number): number => Math.round(bytes / 104857.6) / 10;
  logger.debug({ after, rssBeforeMB: mb(before), rssAfterMB: mb(process.memoryUsage.rss()), tookMs: Math.round(performance.now() - startedAt) }, 'memory released');
}

/** A burst is this many new clients; fewer leave too little behind to be worth a release. */
export const BURST_CLIENTS = 1000;
/** How often the white looks; a release comes one or two periods after a burst's last client. */
export const BURST_CHECK_MS = 2000;

/**
 * Decides when a burst of new clients is over: at a check that saw no new client, after at
 * least `burstClients` since the last release. Never while clients keep arriving (the pause of a
 * release, tens of milliseconds on the JavaScript thread, would land on them), and once per
 * burst. `check()` is driven by a timer in the white (see watchBursts) and directly in tests.
 */
export class BurstRelease {
  private seen: number;
  private sinceRelease = 0;

  constructor(
    private readonly clientsServed: () => number,
    private readonly release: () => void,
    private readonly burstClients = BURST_CLIENTS,
  ) {
    this.seen = clientsServed();
  }

  /** Returns whether it released. */
  check(): boolean {
    const now = this.clientsServed();
    const fresh = Math.max(0, now - this.seen);  // a removed gray takes its count with it
    this.seen = now;
    if (fresh > 0) {
      this.sinceRelease += fresh;
      return false;
    }
    if (this.sinceRelease < this.burstClients) return false;
    this.sinceRelease = 0;
    this.release();
    return true;
  }
}

/** Checks every BURST_CHECK_MS without keeping the process alive; returns the stop. */
export function watchBursts(dataPlane: DataPlane, logger: Logger, clientsServed: () => number): () => void {
  if (!dataPlane.engine) return () => {};
  const burst = new BurstRelease(clientsServed, () => releaseMemory(dataPlane, logger, 'client burst'));
  const timer = setInterval(() => burst.check(), BURST_CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}
