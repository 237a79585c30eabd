// The series every relay process exports, white and gray alike: relay_build_info and the
// standard process_* and event-loop series, read from /proc and Node at scrape time.
import { readdirSync, readFileSync } from 'node:fs';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { DataPlaneName } from '../engine/substrate/pair.js';
import { VERSION } from '../version.js';
import { Family } from './metrics-format.js';

const startTimeSeconds = Date.now() / 1000 - process.uptime();
let loopDelay: IntervalHistogram | null = null;

/** Starts sampling the event loop's delay; called when a metrics listener starts. */
export function startProcessMetrics(): void {
  if (loopDelay) return;
  loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();
}

function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length - 1; // less the descriptor the listing itself holds
  } catch {
    return NaN;
  }
}

function maxFds(): number {
  try {
    const line = /^Max open files\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return line && line[1] !== 'unlimited' ? Number(line[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** dataPlane: the plane this process runs (see substrate/data-plane.ts), for relay_build_info;
 *  the label is left out where the caller does not know it. */
export function processFamilies(dataPlane: DataPlaneName | undefined): Family[] {
  const cpu = process.cpuUsage();
  const families = [
    new Family('relay_build_info', 'gauge', 'Always 1; the labels say which relay this is and which data plane moves its bytes.').add(1, dataPlane ? { version: VERSION, data_plane: dataPlane } : { version: VERSION }),
    new Family('process_start_time_seconds', 'gauge', 'Start time of the process, seconds since the Unix epoch.').add(startTimeSeconds),
    new Family('process_cpu_seconds_total', 'counter', 'User and system CPU time of the process (all threads), seconds.').add((cpu.user + cpu.system) / 1e6),
    new Family('process_resident_memory_bytes', 'gauge', 'Resident memory size of the process, bytes.').add(process.memoryUsage.rss()),
    new Family('process_open_fds', 'gauge', 'Open file descriptors of the process.').add(openFds()),
    new Family('process_max_fds', 'gauge', 'Limit on open file descriptors of the process (ulimit -n).').add(maxFds()),
  ];
  if (loopDelay) {
    // Since the previous scrape: a scraper every 15 s sees each 15 s window once.
    families.push(
      new Family('nodejs_eventloop_lag_p99_seconds', 'gauge', '99th percentile of the event loop delay since the previous scrape, seconds.').add(loopDelay.count > 0 ? loopDelay.percentile(99) / 1e9 : 0),
      new Family('nodejs_eventloop_lag_max_seconds', 'gauge', 'Largest event loop delay since the previous scrape, seconds.').add(loopDelay.count > 0 ? loopDelay.max / 1e9 : 0),
    );
    loopDelay.reset();
  }
  return families;
}
