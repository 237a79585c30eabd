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
    return { rssKB: kb('VmRSS'), hwmKB: kb('VmHWM'), cpuSec: parseStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8')).cpuSec };
  } catch {
    return null; // process gone
  }
}

/** A process's or a thread's stat line (/proc/<pid>/stat, /proc/<pid>/task/<tid>/stat): its
 *  name and its utime + stime in seconds. */
function parseStat(stat: string): { comm: string; cpuSec: number } {
  // The command name may contain spaces and parentheses: fields start after the last ')'.
  const close = stat.lastIndexOf(')');
  const rest = stat.slice(close + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14 and stime field 15.
  return { comm: stat.slice(stat.indexOf('(') + 1, close), cpuSec: (Number(rest[11]) + Number(rest[12])) / ticksPerSecond() };
}

/**
 * CPU seconds (utime + stime, all threads) of this process's children that have exited and been
 * reaped (cutime + cstime of /proc/self/stat): how the harness measures a child, like wrk, that
 * is gone before its figures could be read.
 */
export function reapedChildrenCpuSec(): number {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // cutime is field 16 and cstime field 17.
    return (Number(rest[13]) + Number(rest[14])) / ticksPerSecond();
  } catch {
    return NaN;
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
  /** cpuSec by thread (absent for a process that exited meanwhile). */
  threads?: ThreadCpu;
}

/**
 * A process's CPU seconds by kind of thread: its main thread (for Node: JavaScript), relay's engine
 * threads (named relay-engine-N by native/engine.cc), and the rest (Node's V8 and libuv helpers).
 * Threads that ended between two readings are missing from both, so the parts of a diff can
 * sum to a little less than the process's cpuSec.
 */
export interface ThreadCpu {
  main: number;
  engine: number;
  other: number;
}

export function readThreadCpu(pid: number): ThreadCpu | null {
  const out: ThreadCpu = { main: 0, engine: 0, other: 0 };
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  for (const tid of tids) {
    try {
      const { comm, cpuSec } = parseStat(fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'));
      if (Number(tid) === pid) out.main += cpuSec;
      else if (comm.startsWith('relay-engine-')) out.engine += cpuSec;
      else out.other += cpuSec;
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return out;
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
  private readonly firstThreads = new Map<string, ThreadCpu>();
  private readonly peakKB = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private readonly pids: Record<string, number>;

  constructor(
    pids: Readonly<Record<string, number>>,
    private readonly intervalMs = 100,
  ) {
    this.pids = { ...pids };
  }

  /** A process started after start(): all of its CPU counts, its memory is sampled from now. */
  track(name: string, pid: number): void {
    this.pids[name] = pid;
    // Just spawned, a process may not have its memory yet (no VmRSS line while it execs).
    const rss = readProc(pid)?.rssKB ?? NaN;
    const kb = Number.isFinite(rss) ? rss : 0;
    this.first.set(name, { rssKB: kb, hwmKB: kb, cpuSec: 0 });
    this.firstThreads.set(name, { main: 0, engine: 0, other: 0 });
    this.peakKB.set(name, kb);
  }

  start(): void {
    for (const [name, pid] of Object.entries(this.pids)) {
      resetPeak(pid);
      const s = readProc(pid);
      if (s) {
        this.first.set(name, s);
        this.peakKB.set(name, s.rssKB);
      }
      const t = readThreadCpu(pid);
      if (t) this.firstThreads.set(name, t);
    }
    this.busy0 = machineBusySec();
    this.t0 = performance.now();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  private sample(): void {
    for (const [name, pid] of Object.entries(this.pids)) {
      const s = readProc(pid);
      if (s && Number.isFinite(s.rssKB)) this.peakKB.set(name, Math.max(this.peakKB.get(name) ?? 0, s.rssKB));
    }
  }

  /**
   * `exited`: CPU seconds of tracked processes that have exited meanwhile (see
   * reapedChildrenCpuSec); their memory is the largest sampled, and also their end figure.
   */
  stop(exited: Readonly<Record<string, number>> = {}): Record<string, ProcUsage> {
    if (this.timer) clearInterval(this.timer);
    const out: Record<string, ProcUsage> = {};
    for (const [name, pid] of Object.entries(this.pids)) {
      const a = this.first.get(name);
      const gone = exited[name];
      if (gone !== undefined) {
        const peakMB = (this.peakKB.get(name) ?? 0) / 1024;
        out[name] = { pid, peakRssMB: peakMB, endRssMB: peakMB, cpuSec: gone };
        continue;
      }
      const b = readProc(pid);
      if (!a || !b) continue;
      const peak = Math.max(this.peakKB.get(name) ?? 0, b.rssKB, Number.isFinite(b.hwmKB) ? b.hwmKB : 0);
      out[name] = { pid, peakRssMB: peak / 1024, endRssMB: b.rssKB / 1024, cpuSec: b.cpuSec - a.cpuSec };
      const t0 = this.firstThreads.get(name);
      const t1 = readThreadCpu(pid);
      if (t0 && t1) out[name].threads = { main: t1.main - t0.main, engine: t1.engine - t0.engine, other: t1.other - t0.other };
    }
    const elapsedSec = (performance.now() - this.t0) / 1000;
    const busySec = machineBusySec() - this.busy0;
    const own = Object.values(out).reduce((acc, u) => acc + u.cpuSec, 0);
    const foreignSec = Math.max(0, busySec - own);
    this.machine = { elapsedSec, busySec, foreignSec, foreignShare: foreignSec / (elapsedSec * os.cpus().length) };
    return out;
  }
}
