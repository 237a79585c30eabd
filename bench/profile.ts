// --profile white|gray: run that relay process under V8's sampling profiler for the bulk,
// kept- and new-connection workloads, then point at the .cpuprofile (open it in Chrome DevTools or VS Code)
// and print the functions with the most self time, so a first look needs no tool at all.
import fs from 'node:fs';
import path from 'node:path';
import type { Options } from './args.js';
import { fmtNum, sleep } from './common.js';
import { mkTemp, progress, stamp, startLoadgen, startService } from './env.js';
import { type LoadgenWorkloadId, workloadFor } from './plan.js';
import { startRelay } from './targets.js';

const PROFILED: readonly LoadgenWorkloadId[] = ['bulk-up-1', 'bulk-down-1', 'bulk-up-8', 'bulk-down-8', 'kept-c1', 'kept-c64', 'new-c64'];

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

/** Self time per function (summed over all its nodes), largest first. */
export function topSelfTime(p: CpuProfile, n: number): { name: string; where: string; ms: number; pct: number }[] {
  const byNode = new Map<number, number>();
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  // timeDeltas[i] is the time before sample i; the time a sample stands for is the gap to the next.
  for (let i = 0; i < samples.length; i++) {
    const dt = deltas[i + 1] ?? 0;
    byNode.set(samples[i]!, (byNode.get(samples[i]!) ?? 0) + dt);
  }
  const byFn = new Map<string, { name: string; where: string; us: number }>();
  let total = 0;
  for (const node of p.nodes) {
    const us = byNode.get(node.id) ?? 0;
    total += us;
    const cf = node.callFrame;
    const file = cf.url ? cf.url.replace(/^file:\/\//, '') : '';
    const where = file ? `${path.basename(file)}:${cf.lineNumber + 1}` : '';
    const key = `${cf.functionName}|${where}`;
    const e = byFn.get(key) ?? { name: cf.functionName || '(anonymous)', where, us: 0 };
    e.us += us;
    byFn.set(key, e);
  }
  // Idle time says nothing about where the process spends its work; leave it out of the shares.
  const idle = [...byFn.values()].filter((e) => e.name === '(idle)').reduce((a, e) => a + e.us, 0);
  total -= idle;
  return [...byFn.values()]
    .filter((e) => e.name !== '(idle)')
    .sort((a, b) => b.us - a.us)
    .slice(0, n)
    .map((e) => ({ name: e.name, where: e.where, ms: e.us / 1000, pct: total > 0 ? (100 * e.us) / total : 0 }));
}

export async function runProfile(opts: Options): Promise<number> {
  const side = opts.profileSide!;
  const t0 = Date.now();
  const profDir = path.join(opts.outDir, 'profiles', `${side}-${stamp()}`);
  fs.mkdirSync(profDir, { recursive: true });
  const tmp = mkTemp('relay-bench-prof-');
  const service = await startService();
  const loadgen = await startLoadgen();
  const started = await startRelay({
    cli: opts.relayCli,
    servicePort: service.port,
    dir: path.join(tmp, 'relay'),
    pool: opts.pool,
    threads: opts.threads,
    readyTimeoutMs: opts.readyTimeoutMs,
    nodeArgs: { [side]: ['--cpu-prof', `--cpu-prof-dir=${profDir}`] },
  });
  if (!started.ok) {
    process.stderr.write(`relay unavailable: ${started.reason}\n${started.detail ?? ''}\n`);
    loadgen.stop();
    service.stop();
    return 1;
  }
  const t = started.target;
  progress(t0, `profiling the ${side} (pid ${t.procs[side]}) into ${profDir}`);
  const timing = { seconds: opts.seconds, warmupSeconds: opts.warmupSeconds };
  for (const wid of PROFILED) {
    try {
      const r = await loadgen.run(t.port, workloadFor(wid, timing), opts.seconds * 1000 + 30_000);
      const fig = r.kind === 'bulk' ? `${fmtNum(r.mbPerSec)} MB/s` : r.kind === 'kept' ? `${fmtNum(r.reqPerSec)} req/s` : '';
      progress(t0, `${wid}: ${fig}`);
    } catch (e) {
      progress(t0, `${wid}: failed: ${(e as Error).message}`);
    }
    await sleep(100);
  }
  // The profile is written when the process exits normally; a signal that kills it loses it.
  progress(t0, `stopping the relay (SIGTERM) so the ${side} writes its profile …`);
  await t.stop();
  loadgen.stop();
  service.stop();
  const files = fs.readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) {
    process.stderr.write(
      `no .cpuprofile in ${profDir}: the ${side} did not exit normally on SIGTERM (Node writes --cpu-prof ` +
        `output only on a normal exit; the CLI should call process.exit() after its graceful shutdown).\n`,
    );
    return 1;
  }
  for (const f of files) {
    const full = path.join(profDir, f);
    process.stdout.write(`\nprofile: ${full}\n  (open in Chrome DevTools › Performance, or VS Code)\n  top self time (share of non-idle time):\n`);
    const prof = JSON.parse(fs.readFileSync(full, 'utf8')) as CpuProfile;
    for (const e of topSelfTime(prof, 15)) {
      process.stdout.write(`  ${e.pct.toFixed(1).padStart(5)}%  ${fmtNum(e.ms, 1).padStart(9)} ms  ${e.name}  ${e.where}\n`);
    }
  }
  return 0;
}
