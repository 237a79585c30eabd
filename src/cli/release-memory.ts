// Giving back memory that one-off work used: once startup or a reload is over, and once a burst
// of new clients has passed. The V8 heap keeps startup's garbage (modules compiled once, the
// config's parse, the TLS setup) until a full collection, which a server whose JavaScript
// allocates almost nothing (the engine moves the bytes) may not run for a long time; a burst of
// thousands of new clients grows it by about 10 MB the same way. So: one full collection, then
// malloc_trim in the addon (native/memory.cc) for the arenas the config and certificate workers
// left. The white drops from about 63 to 57 MB resident after startup. Only with the native
// plane, which has the trim. Logged at debug with the sizes (log.level: debug).
//
// The collection is V8's memory-reducing one (LowMemoryNotification, which also shrinks the young
// generation back) from the small addon native/v8-memory, built from source where a compiler is
// at hand: it needs V8's C++ API, which ties a binary to one Node ABI, so it is kept out of the
// engine's Node-API addon that ships prebuilt. Without it, V8's plain gc() extension (switched
// on at first use), which leaves the young generation at its grown size.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { DataPlane } from '../engine/substrate/data-plane.js';
import type { Logger } from '../log.js';

export function releaseMemory(dataPlane: DataPlane, logger: Logger, after: string): void {
  const engine = dataPlane.engine;
  if (!engine) return;
  const before = process.memoryUsage.rss();
  const startedAt = performance.now();
  fullCollection()();
  engine.trimMalloc();
  const mb = (bytes: number): number => Math.round(bytes / 104857.6) / 10;
  logger.debug({ after, rssBeforeMB: mb(before), rssAfterMB: mb(process.memoryUsage.rss()), tookMs: Math.round(performance.now() - startedAt) }, 'memory released');
}

/** From dist/src/cli/ to the package root. */
const V8_MEMORY_ADDON = fileURLToPath(new URL('../../../native/v8-memory/build/Release/relay_v8_memory.node', import.meta.url));

let collect: (() => void) | null = null;

function fullCollection(): () => void {
  if (collect) return collect;
  try {
    const addon = createRequire(import.meta.url)(V8_MEMORY_ADDON) as { lowMemoryNotification(): void };
    collect = () => addon.lowMemoryNotification();
  } catch {
    v8.setFlagsFromString('--expose-gc');
    // A fresh context sees the flag; the main context was created before it.
    collect = vm.runInNewContext('gc') as () => void;
  }
  return collect;
}

/** A burst is this many new clients; fewer leave too little behind to be worth a release. */
export const BURST_CLIENTS = 1000;
/** How often the white looks; a release comes one or two periods after a burst's last client. */
export const BURST_CHECK_MS = 2000;

/**
 * A check that saw at most this many new clients is quiet. Not zero: a server rarely goes two
 * seconds without a single client, and one that never did would keep a burst's memory for good.
 */
export const QUIET_CLIENTS = 20;

/**
 * Decides when a burst of new clients is over: at a quiet check (at most `quietClients` new
 * ones), after at least `burstClients` since the last release. Never while a burst is still
 * arriving (the pause of a release, tens of milliseconds on the JavaScript thread, would hold up
 * its bookkeeping), and once per burst. `check()` is driven by a timer in the white (see
 * watchBursts) and directly in tests.
 */
export class BurstRelease {
  private seen: number;
  private sinceRelease = 0;

  constructor(
    private readonly clientsServed: () => number,
    private readonly release: () => void,
    private readonly burstClients = BURST_CLIENTS,
    private readonly quietClients = QUIET_CLIENTS,
  ) {
    this.seen = clientsServed();
  }

  /** Returns whether it released. */
  check(): boolean {
    const now = this.clientsServed();
    const fresh = Math.max(0, now - this.seen);  // a removed gray takes its count with it
    this.seen = now;
    this.sinceRelease += fresh;
    if (fresh > this.quietClients || this.sinceRelease < this.burstClients) return false;
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
