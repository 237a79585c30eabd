// --scale: (1) many concurrent idle clients through one gray, to get the memory cost of one
// connection on the white and on the gray (and on each haproxy hop, for comparison); (2) a white
// configured with many grays, to time its startup until "listening".
import fs from 'node:fs';
import path from 'node:path';
import type { Options } from './args.js';
import { fmtNum, freePorts, median, openFilesLimit, sleep } from './common.js';
import { machineInfo, mkTemp, progress, stamp, startLoadgen, startService, writeResults } from './env.js';
import { isLogMsg, spawnManaged } from './proc.js';
import { readProc } from './procstat.js';
import { type RelayGrayDef, type Started, newSecret, relayCliProblem, relayEnv, startHaproxy, startRelay, whiteYaml } from './targets.js';
import type { IdleResult } from './types.js';

/** File descriptors a proxy process needs besides its connections (listeners, pool, stdio, libuv). */
const FD_OVERHEAD = 300;

interface IdleRow {
  target: 'relay' | 'haproxy';
  available: boolean;
  reason?: string;
  clients: number;
  opened?: number;
  failed?: number;
  firstError?: string | null;
  openSeconds?: number;
  procs?: Record<string, { baseRssMB: number; loadedRssMB: number; perConnKB: number }>;
}

function rssMB(pid: number): number {
  const s = readProc(pid);
  return s ? s.rssKB / 1024 : NaN;
}

async function idleScale(opts: Options, clients: number, t0: number, servicePort: number, loadgen: Awaited<ReturnType<typeof startLoadgen>>, tmp: string): Promise<IdleRow[]> {
  const rows: IdleRow[] = [];
  for (const name of ['relay', 'haproxy'] as const) {
    if (!opts.targets.includes(name)) continue;
    let started: Started;
    if (name === 'relay') {
      started = await startRelay({ cli: opts.relayCli, servicePort, dir: path.join(tmp, 'relay-idle'), pool: opts.pool, threads: opts.threads, readyTimeoutMs: opts.readyTimeoutMs });
    } else {
      started = await startHaproxy({ bin: opts.haproxyBin, splice: opts.haproxySplice, servicePort, dir: path.join(tmp, 'haproxy-idle'), maxconn: clients + 20, maxpipes: 64, threads: opts.threads, readyTimeoutMs: opts.readyTimeoutMs });
    }
    if (!started.ok) {
      progress(t0, `${name}: unavailable: ${started.reason}`);
      rows.push({ target: name, available: false, reason: started.reason, clients });
      continue;
    }
    const t = started.target;
    // Let start-up garbage settle before the baseline.
    await sleep(1000);
    const base = Object.fromEntries(Object.entries(t.procs).map(([k, pid]) => [k, rssMB(pid)]));
    progress(t0, `${name}: opening ${fmtNum(clients)} idle clients (each proven by one echo) …`);
    const ticker = setInterval(() => {
      const now = Object.entries(t.procs).map(([k, pid]) => `${k} ${fmtNum(rssMB(pid), 1)} MiB`).join(', ');
      progress(t0, `${name}: … ${now}`);
    }, 5000);
    let res: IdleResult;
    try {
      res = (await loadgen.run(t.port, { kind: 'idle-open', conns: clients, connectConcurrency: 64, timeoutSeconds: 150 }, 200_000)) as IdleResult;
    } catch (e) {
      // The load generator gave up (or died): report it as this column's reason, go on with the next.
      const reason = `idle-open failed: ${(e as Error).message}`;
      progress(t0, `${name}: ${reason}`);
      await t.stop();
      rows.push({ target: name, available: false, reason, clients });
      continue;
    } finally {
      clearInterval(ticker);
    }
    await sleep(1000);
    const procs: NonNullable<IdleRow['procs']> = {};
    for (const [k, pid] of Object.entries(t.procs)) {
      const loaded = rssMB(pid);
      const b = base[k] ?? NaN;
      procs[k] = { baseRssMB: b, loadedRssMB: loaded, perConnKB: res.opened > 0 ? ((loaded - b) * 1024) / res.opened : NaN };
    }
    progress(
      t0,
      `${name}: ${fmtNum(res.opened)} open, ${res.failed} failed in ${res.seconds.toFixed(1)} s${res.firstError ? ` (first error: ${res.firstError})` : ''}; ` +
        Object.entries(procs).map(([k, p]) => `${k} ${fmtNum(p.baseRssMB, 1)} → ${fmtNum(p.loadedRssMB, 1)} MiB = ${fmtNum(p.perConnKB, 1)} KiB/conn`).join(', '),
    );
    await loadgen.run(t.port, { kind: 'idle-release' }, 30_000);
    await t.stop();
    rows.push({ target: name, available: true, clients, opened: res.opened, failed: res.failed, firstError: res.firstError, openSeconds: res.seconds, procs });
  }
  return rows;
}

interface StartupRow {
  grays: number;
  available: boolean;
  reason?: string;
  /** Spawn to the "listening" log line, one value per try. */
  seconds?: number[];
  medianSeconds?: number;
  rssMB?: number[];
  /** Saving the file with one more gray until the white logs "config reloaded" (its port pair
   *  is bound by then), one value per try. */
  reloadSeconds?: number[];
  medianReloadSeconds?: number;
}

async function whiteStartup(opts: Options, grays: number, tries: number, tmp: string): Promise<StartupRow> {
  const problem = relayCliProblem(opts.relayCli);
  if (problem) return { grays, available: false, reason: problem };
  const seconds: number[] = [];
  const rss: number[] = [];
  const reloads: number[] = [];
  for (let i = 0; i < tries; i++) {
    const ports = await freePorts(3 + 2 * grays);
    const defs: RelayGrayDef[] = [];
    for (let g = 0; g < grays; g++) {
      defs.push({ id: `g${String(g).padStart(4, '0')}`, secret: newSecret(), publicPort: ports[1 + 2 * g]!, dataPort: ports[2 + 2 * g]! });
    }
    const dir = path.join(tmp, `startup-${grays}-${i}`);
    fs.mkdirSync(dir, { recursive: true });
    const cfg = path.join(dir, 'white.yaml');
    fs.writeFileSync(cfg, whiteYaml(ports[0]!, defs, null, opts.threads), { mode: 0o600 });
    const start = process.hrtime.bigint();
    const white = spawnManaged(`relay white (${grays} grays)`, process.execPath, [opts.relayCli, 'white', '--config', cfg], { cwd: dir, env: relayEnv() });
    try {
      await white.waitForLine((l) => isLogMsg(l, 'listening'), 60_000, '"listening" log line');
      seconds.push(Number(process.hrtime.bigint() - start) / 1e9);
      rss.push(rssMB(white.pid));
      // The watcher is ready once the admin line is out; then add one gray the way relayctl
      // does (temp file + rename) and time the reload.
      await white.waitForLine((l) => isLogMsg(l, 'admin listening'), 60_000, '"admin listening" log line');
      const added: RelayGrayDef = { id: 'added', secret: newSecret(), publicPort: ports[1 + 2 * grays]!, dataPort: ports[2 + 2 * grays]! };
      const reloadStart = process.hrtime.bigint();
      fs.writeFileSync(`${cfg}.tmp`, whiteYaml(ports[0]!, [...defs, added], null, opts.threads), { mode: 0o600 });
      fs.renameSync(`${cfg}.tmp`, cfg);
      await white.waitForLine((l) => isLogMsg(l, 'config reloaded'), 60_000, '"config reloaded" log line');
      reloads.push(Number(process.hrtime.bigint() - reloadStart) / 1e9);
    } catch (e) {
      await white.stop();
      return { grays, available: false, reason: (e as Error).message.split('\n')[0] ?? 'failed' };
    }
    await white.stop();
  }
  return { grays, available: true, seconds, medianSeconds: median(seconds), rssMB: rss, reloadSeconds: reloads, medianReloadSeconds: median(reloads) };
}

export async function runScale(opts: Options): Promise<number> {
  const t0 = Date.now();
  const startedAt = new Date();
  const tmp = mkTemp('relay-bench-scale-');
  const limit = openFilesLimit();
  // Each relayed client holds 2 sockets in the white (client + data) and 2 in the gray (data +
  // service); each haproxy hop holds 2 as well. The soft limit applies to each process.
  const fit = Math.floor((limit.soft - FD_OVERHEAD - 2 * opts.pool) / 2);
  let clients = opts.scaleClients;
  let fdNote: string | null = null;
  if (Number.isFinite(fit) && fit < clients) {
    fdNote =
      `ulimit -n is ${limit.soft} (hard ${limit.hard}): TOO LOW for ${fmtNum(clients)} clients. The white and the gray each need ` +
      `2 descriptors per client (≥ ${fmtNum(2 * clients + FD_OVERHEAD + 2 * opts.pool)} for ${fmtNum(clients)}). ` +
      `Measuring with ${fmtNum(fit)} clients instead; per-connection figures are unaffected. ` +
      `For the full run: raise the limit (ulimit -n 65536, or prlimit as root with a higher hard limit) and start the bench again.`;
    process.stderr.write(`\n*** ${fdNote}\n\n`);
    clients = fit;
  } else {
    progress(t0, `ulimit -n ${limit.soft}: enough for ${fmtNum(clients)} clients`);
  }
  const service = await startService();
  const loadgen = await startLoadgen();
  const idle = await idleScale(opts, clients, t0, service.port, loadgen, tmp);
  loadgen.stop();
  service.stop();

  const tries = opts.rounds > 3 ? opts.rounds : 3;
  progress(t0, `white startup: 1 gray vs ${fmtNum(opts.scaleGrays)} grays, ${tries} tries each …`);
  const startup: StartupRow[] = [];
  if (opts.targets.includes('relay')) {
    for (const g of [1, opts.scaleGrays]) {
      const row = await whiteStartup(opts, g, tries, tmp);
      startup.push(row);
      progress(t0, row.available ? `white with ${g} gray${g === 1 ? '' : 's'}: listening after ${row.seconds!.map((s) => s.toFixed(2)).join(', ')} s` : `white with ${g} gray${g === 1 ? '' : 's'}: unavailable: ${row.reason}`);
    }
  }

  const out: string[] = ['', `Idle connections (${fmtNum(clients)} requested${clients < opts.scaleClients ? `, capped from ${fmtNum(opts.scaleClients)} by ulimit -n` : ''}):`];
  for (const r of idle) {
    if (!r.available) {
      out.push(`  ${r.target}: unavailable: ${r.reason}`);
      continue;
    }
    out.push(`  ${r.target}: ${fmtNum(r.opened ?? 0)} open, ${r.failed} failed, in ${(r.openSeconds ?? 0).toFixed(1)} s${r.firstError ? ` (first error: ${r.firstError})` : ''}`);
    for (const [k, p] of Object.entries(r.procs ?? {})) {
      out.push(`    ${k.padEnd(6)} RSS ${fmtNum(p.baseRssMB, 1).padStart(7)} → ${fmtNum(p.loadedRssMB, 1).padStart(7)} MiB   ${fmtNum(p.perConnKB, 2).padStart(7)} KiB per connection`);
    }
  }
  out.push('', 'White startup until "listening", then the reload of one added gray:');
  if (startup.length === 0) out.push('  relay not requested');
  for (const s of startup) {
    out.push(
      s.available
        ? `  ${fmtNum(s.grays).padStart(5)} gray${s.grays === 1 ? ' ' : 's'}: median ${s.medianSeconds!.toFixed(3)} s (${s.seconds!.map((x) => x.toFixed(3)).join(', ')}), RSS ${s.rssMB!.map((x) => fmtNum(x, 1)).join(', ')} MiB; ` +
          `one gray added by reload in median ${s.medianReloadSeconds!.toFixed(3)} s (${s.reloadSeconds!.map((x) => x.toFixed(3)).join(', ')})`
        : `  ${fmtNum(s.grays).padStart(5)} gray${s.grays === 1 ? ' ' : 's'}: unavailable: ${s.reason}`,
    );
  }
  if (fdNote) out.push('', `NOTE: ${fdNote}`);
  process.stdout.write(out.join('\n') + '\n');

  const files = writeResults(
    opts.outDir,
    `scale-${stamp(startedAt)}`,
    {
      schema: 'relay-bench-scale/1',
      mode: 'scale',
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      durationSec: (Date.now() - t0) / 1000,
      machine: machineInfo(opts.haproxyBin),
      settings: { requestedClients: opts.scaleClients, clients, pool: opts.pool, grays: opts.scaleGrays, fdNote },
      idle,
      startup,
    },
    null,
  );
  process.stdout.write(`\nresults: ${files.json}\n`);
  return 0;
}
