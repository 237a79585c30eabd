// Peak memory and CPU time of the measured processes, read from /proc while a workload runs.
// VmHWM is the kernel's own peak-RSS record; writing "5" to /proc/<pid>/clear_refs resets it, so
// each workload gets its own peak instead of the largest one since the process started. Sampling
// VmRSS as well covers kernels or containers where the reset is not allowed.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';

let clkTck = 0;
function ticksPerSecond(): number {
  if (clkTck === 0) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100; // the value on every Linux we care about
    }
  }
  return clkTck;
}

export interface ProcSnapshot {
  rssKB: number;
  hwmKB: number;
  /** utime + stime, all threads, in seconds. */
  cpuSec: number;
}

export function readProc(pid: number): ProcSnapshot | null {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string): number => {
      const m = status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'));
      return m ? Number(m[1]) : NaN;
    };
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime is field 14 and stime field 15.
    const ticks = Number(rest[11]) + Number(rest[12]);
    return { rssKB: kb('VmRSS'), hwmKB: kb('VmHWM'), cpuSec: ticks / ticksPerSecond() };
  } catch {
    return null; // process gone
  }
}

export function resetPeak(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export interface ProcUsage {
  pid: number;
  peakRssMB: number;
  /** RSS when the workload ended. */
  endRssMB: number;
  cpuSec: number;
}

/** Busy CPU seconds of the whole machine, all cores (from the first line of /proc/stat). */
export function machineBusySec(): number {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    const busy = (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
    return busy / ticksPerSecond();
  } catch {
    return NaN;
  }
}

/**
 * How much of the machine's CPU went to processes the bench did not start while it measured.
 * On a shared machine this is what makes figures unreliable, so every measurement records it.
 */
export interface MachineCpu {
  elapsedSec: number;
  busySec: number;
  /** Busy time not accounted for by the sampled processes. */
  foreignSec: number;
  /** foreignSec / (elapsed × cores): 0 on a quiet machine. */
  foreignShare: number;
}

/** Samples a named set of processes from start() to stop(). */
export class Sampler {
  private busy0 = NaN;
  private t0 = 0;
  machine: MachineCpu | null = null;
  private readonly first = new Map<string, ProcSnapshot>();
  private readonly peakKB = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly pids: Readonly<Record<string, number>>,
    private readonly intervalMs = 100,
  ) {}

  start(): void {
    for (const [name, pid] of Object.entries(this.pids)) {
      resetPeak(pid);
      const s = readProc(pid);
      if (s) {
        this.first.set(name, s);
        this.peakKB.set(name, s.rssKB);
      }
    }
    this.busy0 = machineBusySec();
    this.t0 = performance.now();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  private sample(): void {
    for (const [name, pid] of Object.entries(this.pids)) {
      const s = readProc(pid);
      if (s) this.peakKB.set(name, Math.max(this.peakKB.get(name) ?? 0, s.rssKB));
    }
  }

  stop(): Record<string, ProcUsage> {
    if (this.timer) clearInterval(this.timer);
    const out: Record<string, ProcUsage> = {};
    for (const [name, pid] of Object.entries(this.pids)) {
      const a = this.first.get(name);
      const b = readProc(pid);
      if (!a || !b) continue;
      const peak = Math.max(this.peakKB.get(name) ?? 0, b.rssKB, Number.isFinite(b.hwmKB) ? b.hwmKB : 0);
      out[name] = { pid, peakRssMB: peak / 1024, endRssMB: b.rssKB / 1024, cpuSec: b.cpuSec - a.cpuSec };
    }
    const elapsedSec = (performance.now() - this.t0) / 1000;
    const busySec = machineBusySec() - this.busy0;
    const own = Object.values(out).reduce((acc, u) => acc + u.cpuSec, 0);
    const foreignSec = Math.max(0, busySec - own);
    this.machine = { elapsedSec, busySec, foreignSec, foreignShare: foreignSec / (elapsedSec * os.cpus().length) };
    return out;
  }
}
