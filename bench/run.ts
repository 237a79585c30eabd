// Entry point of the benchmark (`npm run bench -- [options]`). The standard run measures every
// workload three ways in one run (direct to the service, through relay, through a two-hop haproxy
// chain), plus relay with an authorize hook on the new-connection workload, and new connections
// from wrk to nginx through a second instance of each target, over several rounds, and writes a
// table, a JSON file and an SVG chart. See docs/bench.md.
import path from 'node:path';
import { findOrInstall } from './apt.js';
import { type Options, USAGE, parseArgs } from './args.js';
import { fmtNum, sleep } from './common.js';
import { machineInfo, mkTemp, progress, stamp, startLoadgen, startService, writeResults } from './env.js';
import { type Nginx, type NginxCounts, startNginx, waitHttp } from './nginx.js';
import { AUTHORIZE_WORKLOADS, type LoadgenWorkloadId, type WorkloadId, WRK_TARGETS, runsWorkload, workloadFor } from './plan.js';
import { Sampler, reapedChildrenCpuSec } from './procstat.js';
import { type Measurement, type TargetStatus, type WrkStatus, renderTables, summarize } from './report.js';
import { runProfile } from './profile.js';
import { runScale } from './scale.js';
import { judgeSeries, readRun, renderSeries } from './series.js';
import { renderSvg } from './svg.js';
import { BENCH_AUTHORIZE, type Started, type Target, type TargetName, startDirect, startHaproxy, startRelay, startRelayWithAuthorize } from './targets.js';
import type { WorkloadResult } from './types.js';
import { runWrk, wrkVersion } from './wrk.js';

/** Latency in µs as ms text; NaN arrives as null through IPC (JSON), hence the loose type. */
const ms = (us: number | null): string => (typeof us === 'number' ? fmtNum(us / 1000, 3) : '–');

function brief(r: WorkloadResult | null, err: string | null): string {
  if (!r) return `FAILED: ${err ?? '?'}`;
  const e = 'errors' in r && r.errors > 0 ? `  (${r.errors} errors, first: ${r.firstError})` : '';
  switch (r.kind) {
    case 'bulk':
      return `${fmtNum(r.mbPerSec)} MB/s${e}`;
    case 'kept':
      return `${fmtNum(r.reqPerSec)} req/s  p50 ${ms(r.rttP50Us)} ms  p99 ${ms(r.rttP99Us)} ms${e}`;
    case 'newconn':
      return `${fmtNum(r.connPerSec)} conn/s  TTFB p50 ${ms(r.ttfbP50Us)} ms  p99 ${ms(r.ttfbP99Us)} ms${e}`;
    case 'wrk':
      return `${fmtNum(r.connPerSec)} conn/s  latency p50 ${ms(r.latencyP50Us)} ms  p99 ${ms(r.latencyP99Us)} ms${e}`;
    default:
      return r.kind;
  }
}

async function runStandard(opts: Options): Promise<{ code: number; file: string }> {
  const t0 = Date.now();
  const startedAt = new Date();
  const tmp = mkTemp('relay-bench-');
  const machine = machineInfo(opts.haproxyBin);
  progress(t0, `relay bench (${opts.mode}): ${opts.rounds} round(s) × ${opts.workloads.length} workloads × targets ${opts.targets.join(',')}, ${opts.seconds}s each, ${opts.threads} engine thread(s) per relay process and haproxy hop; ${machine.cores} cores, node ${machine.node}`);

  const service = await startService();
  const loadgen = await startLoadgen();
  const status = {} as Record<TargetName, TargetStatus>;
  const running: Target[] = [];
  const consider = (name: TargetName, s: Started): void => {
    if (s.ok) {
      status[name] = { available: true, info: s.target.info };
      running.push(s.target);
      progress(t0, `${name}: ready on port ${s.target.port}`);
    } else {
      status[name] = { available: false, reason: s.reason };
      progress(t0, `${name}: unavailable: ${s.reason}${s.detail && s.detail !== s.reason ? `\n${s.detail}` : ''}`);
    }
  };
  for (const name of ['direct', 'haproxy', 'relay', 'relay+authorize'] as const) {
    if (!opts.targets.includes(name)) {
      status[name] = { available: false, reason: name === 'relay+authorize' && !opts.authorize ? 'skipped (--no-authorize)' : 'not requested (--targets)' };
      continue;
    }
    if (name === 'direct') consider(name, startDirect(service.port));
    else if (name === 'haproxy') {
      consider(name, await startHaproxy({ bin: opts.haproxyBin, splice: opts.haproxySplice, servicePort: service.port, dir: path.join(tmp, 'haproxy'), maxconn: 4096, threads: opts.threads, readyTimeoutMs: opts.readyTimeoutMs }));
    } else if (name === 'relay') {
      consider(name, await startRelay({ cli: opts.relayCli, servicePort: service.port, dir: path.join(tmp, 'relay'), pool: opts.pool, threads: opts.threads, readyTimeoutMs: opts.readyTimeoutMs }));
    } else {
      consider(name, await startRelayWithAuthorize({ cli: opts.relayCli, servicePort: service.port, dir: path.join(tmp, 'relay-authorize'), pool: opts.pool, threads: opts.threads, readyTimeoutMs: opts.readyTimeoutMs }));
    }
  }

  const wrk = await startWrkSide(opts, tmp, status, t0);
  const measurements: Measurement[] = [];
  const timing = { seconds: opts.seconds, warmupSeconds: opts.warmupSeconds };
  const targetsOf = (w: WorkloadId): Target[] => (w === 'new-c64-wrk' ? wrk.targets : running).filter((t) => runsWorkload(t.name, w));
  const total = opts.rounds * opts.workloads.reduce((n, w) => n + targetsOf(w).length, 0);
  let done = 0;
  for (let round = 1; round <= opts.rounds; round++) {
    for (const wid of opts.workloads) {
      // Same workload back to back on every target, in an order that rotates each round, so slow
      // drift of the machine (thermal, other tenants) spreads over all columns alike.
      const list = targetsOf(wid);
      const order = list.map((_, i) => list[(i + round - 1) % list.length]!);
      for (const target of order) {
        const dead = target.health() ?? (wid === 'new-c64-wrk' ? (wrk.nginx?.health() ?? null) : null);
        if (dead !== null) {
          const st = wid === 'new-c64-wrk' ? wrk.instances : status;
          if (st[target.name]?.available) {
            st[target.name] = { available: false, reason: `died during the run: ${dead.split('\n')[0]}` };
            progress(t0, `${target.name}${wid === 'new-c64-wrk' ? ' (wrk→nginx)' : ''}: ${dead}`);
          }
          continue;
        }
        const m =
          wid === 'new-c64-wrk'
            ? await measureWrk(wrk.wrkBin, wrk.nginx!, target, timing, round, path.join(tmp, 'wrk'))
            : await measure(loadgen, target, wid, timing, round, service.pid);
        measurements.push(m);
        done++;
        const foreign = m.machineCpu ? `  other load ${(m.machineCpu.foreignShare * 100).toFixed(0)}%` : '';
        const hook = m.hookRequests !== undefined ? `  hook answered ${m.hookRequests ?? '?'}` : '';
        const ng = m.nginx !== undefined ? `  nginx accepted ${m.nginx?.accepts ?? '?'}` : '';
        progress(t0, `r${round}/${opts.rounds} ${wid.padEnd(11)} ${target.name.padEnd(15)} ${brief(m.result, m.error)}${hook}${ng}${foreign}   [${done}/${total}]`);
        // Let a relay refill its pool and closed sockets drain before the next measurement.
        await sleep(wid === 'new-c64' || wid === 'new-c64-wrk' ? 300 : 100);
      }
    }
  }

  for (const t of [...running, ...wrk.targets]) await t.stop();
  await wrk.nginx?.stop();
  loadgen.stop();
  service.stop();

  const summary = summarize(measurements, status);
  const direct = summary.metrics.some((m) => m.values.direct !== undefined);
  const tables = renderTables(summary, status, wrk.status);
  process.stdout.write('\n' + tables + '\n');

  const name = stamp(startedAt);
  const json = {
    schema: 'relay-bench/1',
    mode: opts.mode,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    durationSec: (Date.now() - t0) / 1000,
    settings: {
      rounds: opts.rounds,
      seconds: opts.seconds,
      warmupSeconds: opts.warmupSeconds,
      pool: opts.pool,
      threads: opts.threads,
      targets: opts.targets,
      workloads: opts.workloads.map((id) => ({ id, ...workloadFor(id, timing) })),
      // The relay+authorize column: the authorize block it adds to white.yaml (url aside) and where it is measured.
      authorize: opts.authorize ? { ...BENCH_AUTHORIZE, workloads: AUTHORIZE_WORKLOADS } : null,
    },
    machine,
    targets: status,
    // The wrk workload: tools, nginx, and its instances of the targets (its own, pointed at nginx).
    wrk: wrk.status,
    summary,
    measurements,
  };
  const svg = renderSvg(summary, status, wrk.status, `relay bench ${startedAt.toISOString()} (${opts.mode}, ${machine.cores} cores)`);
  const files = writeResults(opts.outDir, name, json, svg);
  process.stdout.write(`\nresults: ${files.json}\nchart:   ${files.svg}\n`);
  progress(t0, 'done');
  if (!direct && opts.targets.includes('direct')) {
    process.stderr.write('direct column has no numbers: the harness itself is broken\n');
    return { code: 1, file: files.json };
  }
  return { code: 0, file: files.json };
}

/** --runs N: N standard runs back to back, then the targets judged over them (series.ts). */
async function runSeries(opts: Options): Promise<number> {
  const startedAt = new Date();
  const files: string[] = [];
  for (let i = 1; i <= opts.runs; i++) {
    if (opts.runs > 1) process.stdout.write(`\n=== run ${i} of ${opts.runs}\n`);
    const r = await runStandard(opts);
    files.push(r.file);
    if (r.code !== 0) return r.code;
  }
  if (opts.runs === 1) return 0;
  return reportSeries(files, path.join(opts.outDir, `series-${stamp(startedAt)}.json`));
}

/** The series table of these results files; with out, also written there as JSON. */
function reportSeries(files: readonly string[], out: string | null): number {
  const series = judgeSeries(files.map(readRun));
  process.stdout.write(`\n${renderSeries(series)}\n`);
  if (out !== null) {
    writeResults(path.dirname(out), path.basename(out, '.json'), { schema: 'relay-bench-series/1', files: files.map((f) => path.basename(f)), series }, null);
    process.stdout.write(`series: ${out}\n`);
  }
  return 0;
}

async function measure(
  loadgen: Awaited<ReturnType<typeof startLoadgen>>,
  target: Target,
  wid: LoadgenWorkloadId,
  timing: { seconds: number; warmupSeconds: number },
  round: number,
  servicePid: number,
): Promise<Measurement> {
  const workload = workloadFor(wid, timing);
  // The harness itself is sampled too, so that only other tenants' CPU counts as foreign.
  const sampler = new Sampler({ ...target.procs, service: servicePid, loadgen: loadgen.pid, harness: process.pid });
  // relay+authorize: count the hook's answers across the measurement (asked outside the sampled
  // window, so the IPC round trip costs the measured processes nothing).
  const hookBefore = target.hookRequests ? await target.hookRequests() : undefined;
  sampler.start();
  let result: WorkloadResult | null = null;
  let error: string | null = null;
  try {
    result = await loadgen.run(target.port, workload, timing.seconds * 1000 + 30_000);
  } catch (e) {
    error = (e as Error).message;
  }
  const procs = sampler.stop();
  const m: Measurement = { round, target: target.name, workload: wid, result, error, procs, machineCpu: sampler.machine };
  if (target.hookRequests) {
    const hookAfter = await target.hookRequests();
    m.hookRequests = typeof hookBefore === 'number' && typeof hookAfter === 'number' ? hookAfter - hookBefore : null;
  }
  return m;
}

interface WrkSide {
  status: WrkStatus;
  wrkBin: string;
  nginx: Nginx | null;
  /** An instance of each of WRK_TARGETS that runs, whose service is nginx. */
  targets: Target[];
  /** Their status (the same object as status.targets when the workload is available). */
  instances: Partial<Record<TargetName, TargetStatus>>;
}

/**
 * The wrk workload's side of the run: wrk and nginx (installed with apt-get when missing), nginx
 * started, and a second instance of each requested target of WRK_TARGETS pointed at it, so the
 * other workloads keep the Node service. Never throws for an expected absence: the workload's
 * rows then say why they are empty.
 */
async function startWrkSide(opts: Options, tmp: string, status: Record<TargetName, TargetStatus>, t0: number): Promise<WrkSide> {
  const none = (reason: string): WrkSide => {
    progress(t0, `wrk→nginx workload: unavailable: ${reason}`);
    return { status: { available: false, reason }, wrkBin: opts.wrkBin, nginx: null, targets: [], instances: {} };
  };
  if (!opts.workloads.includes('new-c64-wrk')) return none('not requested (--workloads)');
  const wanted = WRK_TARGETS.filter((t) => opts.targets.includes(t));
  if (wanted.length === 0) return none(`not requested (--targets has none of ${WRK_TARGETS.join(', ')})`);
  const tools = findOrInstall(
    [
      { bin: opts.wrkBin, pkg: 'wrk' },
      { bin: opts.nginxBin, pkg: 'nginx-light', extraDirs: ['/usr/sbin'] },
    ],
    (line) => progress(t0, line),
  );
  if (!tools.ok) return none(tools.reason);
  const [wrkBin, nginxBin] = tools.paths as [string, string];
  const wrkV = wrkVersion(wrkBin);
  if (wrkV === null) return none(`${wrkBin} -v did not say wrk`);
  const ng = await startNginx({ bin: nginxBin, dir: path.join(tmp, 'nginx'), readyTimeoutMs: opts.readyTimeoutMs });
  if (!ng.ok) return none(ng.reason);
  const nginx = ng.nginx;
  progress(t0, `nginx: ready on port ${nginx.port} (pid ${nginx.pid}); ${wrkV.split(' ').slice(0, 2).join(' ')}`);
  const targets: Target[] = [];
  const st: Partial<Record<TargetName, TargetStatus>> = {};
  for (const name of wanted) {
    const main = status[name];
    if (!main.available) {
      st[name] = { available: false, reason: main.reason };
      continue;
    }
    const dir = path.join(tmp, `${name}-nginx`);
    const common = { servicePort: nginx.port, dir, readyTimeoutMs: opts.readyTimeoutMs, waitReady: waitHttp };
    const s: Started =
      name === 'direct'
        ? startDirect(nginx.port)
        : name === 'haproxy'
          ? await startHaproxy({ ...common, bin: opts.haproxyBin, splice: opts.haproxySplice, maxconn: 4096, threads: opts.threads })
          : await startRelay({ ...common, cli: opts.relayCli, pool: opts.pool, threads: opts.threads });
    if (s.ok) {
      st[name] = { available: true, info: s.target.info };
      targets.push(s.target);
      progress(t0, `${name} (wrk→nginx): ready on port ${s.target.port}`);
    } else {
      st[name] = { available: false, reason: s.reason };
      progress(t0, `${name} (wrk→nginx): unavailable: ${s.reason}`);
    }
  }
  return {
    status: { available: true, wrk: wrkV, nginx: nginx.version, installed: tools.installed, nginxConfig: nginx.config, targets: st },
    wrkBin,
    nginx,
    targets,
    instances: st,
  };
}

/**
 * One wrk measurement: an unmeasured warm-up run first (not in --quick), then wrk sampled with
 * the target's processes and nginx. wrk's CPU is read once it has exited (reapedChildrenCpuSec),
 * and nginx's counters are read outside the sampled window.
 */
async function measureWrk(wrkBin: string, nginx: Nginx, target: Target, timing: { seconds: number; warmupSeconds: number }, round: number, dir: string): Promise<Measurement> {
  const w = workloadFor('new-c64-wrk', timing);
  let result: WorkloadResult | null = null;
  let error: string | null = null;
  let before: NginxCounts | null = null;
  try {
    if (w.warmupSeconds > 0) await runWrk({ bin: wrkBin, port: target.port, w, seconds: w.warmupSeconds, dir });
    before = await nginx.counts();
  } catch (e) {
    error = `warm-up: ${(e as Error).message}`;
  }
  const sampler = new Sampler({ ...target.procs, service: nginx.pid, harness: process.pid });
  sampler.start();
  const reaped0 = reapedChildrenCpuSec();
  let wrkRan = false;
  if (error === null) {
    try {
      result = await runWrk({ bin: wrkBin, port: target.port, w, seconds: w.seconds, dir, onStart: (pid) => sampler.track('loadgen', pid) });
    } catch (e) {
      error = (e as Error).message;
    }
    wrkRan = true;
  }
  const procs = sampler.stop(wrkRan ? { loadgen: reapedChildrenCpuSec() - reaped0 } : {});
  let counts: NginxCounts | null = null;
  if (before !== null) {
    try {
      const after = await nginx.counts();
      // The second stub_status request is itself one accepted connection and one request.
      counts = { accepts: after.accepts - before.accepts - 1, requests: after.requests - before.requests - 1 };
    } catch {
      counts = null;
    }
  }
  return { round, target: target.name, workload: 'new-c64-wrk', result, error, procs, machineCpu: sampler.machine, nginx: counts };
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    if (!(e as Error).message.includes('usage:')) process.stderr.write(USAGE);
    return 2;
  }
  switch (opts.mode) {
    case 'scale':
      return runScale(opts);
    case 'profile':
      return runProfile(opts);
    case 'series':
      try {
        return reportSeries(opts.seriesFiles, null);
      } catch (e) {
        process.stderr.write(`--series: ${(e as Error).message}\n`);
        return 2;
      }
    default:
      return runSeries(opts);
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
