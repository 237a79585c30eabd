// Turns raw measurements into the summary (medians, spreads, ratios, checks) that goes into the
// JSON file, and prints it as tables.
import { fmtNum, median } from './common.js';
import type { NginxCounts } from './nginx.js';
import { AUTHORIZE_WORKLOADS, type CheckDef, CHECKS, METRICS, PROXY_PROCS, type WorkloadId, WORKLOAD_IDS, opSymbol, passes, proxyCpuPerUnit, workUnits } from './plan.js';
import type { MachineCpu, ProcUsage, ThreadCpu } from './procstat.js';
import { TARGET_NAMES, type TargetName } from './targets.js';
import type { WorkloadResult } from './types.js';

export interface Measurement {
  round: number;
  target: TargetName;
  workload: WorkloadId;
  result: WorkloadResult | null;
  error: string | null;
  /** Measured processes of the target, plus the service and the load generator. */
  procs: Record<string, ProcUsage>;
  /** CPU used on the machine by processes outside the bench during this measurement. */
  machineCpu: MachineCpu | null;
  /** relay+authorize: requests the authorize hook answered during this measurement (warm-up included). */
  hookRequests?: number | null;
  /** new-c64-wrk: TCP connections nginx accepted and requests it answered during this measurement. */
  nginx?: NginxCounts | null;
}

export interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

export type TargetStatus = { available: true; info: Record<string, unknown> } | { available: false; reason: string };

/**
 * The wrk workload as a whole: its tools (with the packages the bench installed), its nginx, and
 * the instances of the targets whose service is that nginx, each up or not and why.
 */
export type WrkStatus =
  | { available: true; wrk: string; nginx: string; installed: string[]; nginxConfig: string; targets: Partial<Record<TargetName, TargetStatus>> }
  | { available: false; reason: string };

export interface MetricSummary {
  id: string;
  label: string;
  unit: string;
  better: 'higher' | 'lower';
  values: Partial<Record<TargetName, Stat>>;
  ratios: {
    haproxyVsDirect: number | null;
    relayVsDirect: number | null;
    relayVsHaproxy: number | null;
    /** relay+authorize ÷ relay: the cost of the authorize hook (new-connection rows only). */
    authorizeVsRelay: number | null;
  };
}

export interface ResourceSummary {
  workload: WorkloadId;
  target: TargetName;
  /** Per measured process (white/gray, hop1/hop2, service, loadgen). */
  procs: Record<string, { peakRssMB: Stat; cpuSec: Stat }>;
  /** CPU of the proxy processes only (white+gray or hop1+hop2) per unit of work. */
  proxyCpuPerUnit: { label: string; value: Stat } | null;
  /** The same per proxy process and kind of thread (procstat.ts ThreadCpu), in proxyCpuPerUnit's unit. */
  threadCpuPerUnit: Record<string, Record<keyof ThreadCpu, Stat>>;
}

export interface CheckResult {
  id: string;
  label: string;
  op: CheckDef['op'];
  value: number;
  measured: number | null;
  pass: boolean | null;
  note: string;
}

/**
 * The cost of the authorize hook per connection: relay+authorize against plain relay on the
 * new-connection workload (medians over rounds). Ratios are relay+authorize ÷ relay; "added" is
 * relay+authorize minus relay.
 */
export interface AuthorizeCost {
  label: string;
  workload: WorkloadId;
  /** null when both columns were measured; otherwise why the cost is not known. */
  unavailable: string | null;
  connPerSec: { relay: number | null; relayAuthorize: number | null; ratio: number | null };
  ttfbP50Ms: { relay: number | null; relayAuthorize: number | null; addedMs: number | null };
  ttfbP99Ms: { relay: number | null; relayAuthorize: number | null; addedMs: number | null };
  /** CPU of white + gray per connection, µs. */
  relayCpuUsPerConn: { relay: number | null; relayAuthorize: number | null; addedUs: number | null };
  /** CPU of the allow-all hook server per connection, µs (the hook's own side of the cost). */
  hookCpuUsPerConn: number | null;
  /** Requests the hook answered over all relay+authorize measurements, and connections they counted
   *  (the hook's count includes warm-up and unfinished connections, so it should be the larger). */
  hookRequests: number | null;
  connections: number;
}

export interface Summary {
  metrics: MetricSummary[];
  resources: ResourceSummary[];
  checks: CheckResult[];
  /** Share of all cores used by other processes while measuring (0 = quiet machine). */
  foreignCpuShare: Stat | null;
  authorizeCost: AuthorizeCost;
  /** Measurements with failed connections or streams, or no result at all. */
  errors: { target: TargetName; workload: WorkloadId; round: number; errors: number; first: string | null }[];
}

/** Past this median share of foreign CPU the table warns that figures are unreliable. */
export const BUSY_MACHINE_SHARE = 0.1;

export function stat(xs: readonly number[]): Stat | null {
  const ok = xs.filter((x) => Number.isFinite(x));
  if (ok.length === 0) return null;
  return { median: median(ok), min: Math.min(...ok), max: Math.max(...ok), n: ok.length };
}

export const AUTHORIZE_COST_LABEL = 'cost of the authorize hook per connection (relay+authorize vs relay, new connections)';

export function summarize(ms: readonly Measurement[], status: Record<TargetName, TargetStatus>): Summary {
  const metrics: MetricSummary[] = METRICS.map((def) => {
    const values: Partial<Record<TargetName, Stat>> = {};
    for (const t of TARGET_NAMES) {
      const xs = ms.filter((m) => m.target === t && m.workload === def.workload && m.result).map((m) => def.read(m.result!, m.procs, t));
      const s = stat(xs);
      if (s) values[t] = s;
    }
    const ratio = (a?: Stat, b?: Stat): number | null => (a && b && b.median > 0 ? a.median / b.median : null);
    return {
      id: def.id,
      label: def.label,
      unit: def.unit,
      better: def.better,
      values,
      ratios: {
        haproxyVsDirect: ratio(values.haproxy, values.direct),
        relayVsDirect: ratio(values.relay, values.direct),
        relayVsHaproxy: ratio(values.relay, values.haproxy),
        authorizeVsRelay: ratio(values['relay+authorize'], values.relay),
      },
    };
  });

  const resources: ResourceSummary[] = [];
  for (const w of WORKLOAD_IDS) {
    for (const t of TARGET_NAMES) {
      const rows = ms.filter((m) => m.target === t && m.workload === w);
      if (rows.length === 0) continue;
      const names = new Set(rows.flatMap((r) => Object.keys(r.procs)));
      const procs: ResourceSummary['procs'] = {};
      for (const p of names) {
        const rss = stat(rows.map((r) => r.procs[p]?.peakRssMB ?? NaN));
        const cpu = stat(rows.map((r) => r.procs[p]?.cpuSec ?? NaN));
        if (rss && cpu) procs[p] = { peakRssMB: rss, cpuSec: cpu };
      }
      let perUnit: ResourceSummary['proxyCpuPerUnit'] = null;
      const byThread: ResourceSummary['threadCpuPerUnit'] = {};
      if (PROXY_PROCS[t].length > 0) {
        const done = rows.filter((r) => r.result !== null);
        const s = stat(done.map((r) => proxyCpuPerUnit(r.result!, r.procs, t)));
        if (s && done[0]) perUnit = { label: workUnits(done[0].result!).label, value: s };
        for (const p of PROXY_PROCS[t]) {
          const part = (k: keyof ThreadCpu): Stat | null => stat(done.map((r) => (r.procs[p]?.threads?.[k] ?? NaN) / workUnits(r.result!).units));
          const main = part('main');
          const engine = part('engine');
          const other = part('other');
          if (main && engine && other) byThread[p] = { main, engine, other };
        }
      }
      resources.push({ workload: w, target: t, procs, proxyCpuPerUnit: perUnit, threadCpuPerUnit: byThread });
    }
  }

  const checks: CheckResult[] = CHECKS.map((c) => {
    const base = { id: c.id, label: c.label, op: c.op, value: c.value };
    if (c.kind === 'white-rss') {
      if (!status.relay.available) return { ...base, measured: null, pass: null, note: 'relay unavailable' };
      const peaks = ms
        .filter((m) => m.target === 'relay' && (m.workload === 'kept-c1' || m.workload === 'kept-c64'))
        .map((m) => m.procs.white?.peakRssMB ?? NaN)
        .filter(Number.isFinite);
      if (peaks.length === 0) return { ...base, measured: null, pass: null, note: 'no white RSS samples' };
      const worst = Math.max(...peaks);
      return { ...base, measured: worst, pass: passes(c.op, worst, c.value), note: 'max over kept-conn runs' };
    }
    const m = metrics.find((x) => x.id === c.metric);
    const r = m?.ratios.relayVsHaproxy ?? null;
    if (r === null) {
      const why = !status.relay.available ? 'relay unavailable' : !status.haproxy.available ? 'haproxy unavailable' : 'no data';
      return { ...base, measured: null, pass: null, note: why };
    }
    return { ...base, measured: r, pass: passes(c.op, r, c.value), note: '' };
  });

  const authorizeCost = authorizeCostOf(ms, metrics, resources, status);
  const foreignCpuShare = stat(ms.map((m) => m.machineCpu?.foreignShare ?? NaN));
  const errors: Summary['errors'] = [];
  for (const m of ms) {
    const n = m.result === null ? 1 : 'errors' in m.result ? m.result.errors : 0;
    const first = m.result === null ? m.error : 'firstError' in m.result ? m.result.firstError : null;
    if (n > 0) errors.push({ target: m.target, workload: m.workload, round: m.round, errors: n, first });
  }
  return { metrics, resources, checks, foreignCpuShare, authorizeCost, errors };
}

function authorizeCostOf(
  ms: readonly Measurement[],
  metrics: readonly MetricSummary[],
  resources: readonly ResourceSummary[],
  status: Record<TargetName, TargetStatus>,
): AuthorizeCost {
  const workload = AUTHORIZE_WORKLOADS[0] ?? 'new-c64';
  const med = (id: string, t: TargetName): number | null => metrics.find((m) => m.id === id)?.values[t]?.median ?? null;
  const diff = (a: number | null, b: number | null): number | null => (a !== null && b !== null ? a - b : null);
  const rate = { relay: med('new_c64_rate', 'relay'), relayAuthorize: med('new_c64_rate', 'relay+authorize') };
  const p50 = { relay: med('new_c64_ttfb_p50', 'relay'), relayAuthorize: med('new_c64_ttfb_p50', 'relay+authorize') };
  const p99 = { relay: med('new_c64_ttfb_p99', 'relay'), relayAuthorize: med('new_c64_ttfb_p99', 'relay+authorize') };
  const res = (t: TargetName): ResourceSummary | undefined => resources.find((r) => r.workload === workload && r.target === t);
  const cpu = { relay: res('relay')?.proxyCpuPerUnit?.value.median ?? null, relayAuthorize: res('relay+authorize')?.proxyCpuPerUnit?.value.median ?? null };
  const runs = ms.filter((m) => m.target === 'relay+authorize' && m.workload === workload);
  const hookCpu = stat(
    runs.map((m) => {
      const u = m.result ? workUnits(m.result).units : NaN;
      return u > 0 ? (m.procs.authorize?.cpuSec ?? NaN) / u : NaN;
    }),
  );
  const counts = runs.map((m) => m.hookRequests);
  const hookRequests = counts.length > 0 && counts.every((c): c is number => typeof c === 'number') ? counts.reduce((a, b) => a + b, 0) : null;
  const connections = runs.reduce((a, m) => a + (m.result?.kind === 'newconn' ? m.result.connections : 0), 0);
  const why = (t: TargetName): string | null => {
    const s = status[t];
    return s.available ? null : `${t} unavailable: ${s.reason}`;
  };
  const unavailable = why('relay+authorize') ?? why('relay') ?? (rate.relay === null || rate.relayAuthorize === null ? 'no data' : null);
  return {
    label: AUTHORIZE_COST_LABEL,
    workload,
    unavailable,
    connPerSec: { ...rate, ratio: rate.relay !== null && rate.relayAuthorize !== null && rate.relay > 0 ? rate.relayAuthorize / rate.relay : null },
    ttfbP50Ms: { ...p50, addedMs: diff(p50.relayAuthorize, p50.relay) },
    ttfbP99Ms: { ...p99, addedMs: diff(p99.relayAuthorize, p99.relay) },
    relayCpuUsPerConn: { ...cpu, addedUs: diff(cpu.relayAuthorize, cpu.relay) },
    hookCpuUsPerConn: hookCpu?.median ?? null,
    hookRequests,
    connections,
  };
}

// ---------------------------------------------------------------------------------------------
// Text output

function pad(s: string, w: number, right = false): string {
  const len = [...s].length;
  if (len >= w) return s;
  return right ? ' '.repeat(w - len) + s : s + ' '.repeat(w - len);
}

function cell(s: Stat | undefined, digits: number): string {
  if (!s) return '–';
  const m = fmtNum(s.median, digits);
  if (s.n < 2) return m;
  return `${m} (${fmtNum(s.min, digits)}–${fmtNum(s.max, digits)})`;
}

function ratioText(r: number | null): string {
  return r === null ? '–' : r.toFixed(2);
}

export function table(rows: string[][], rightCols: Set<number>): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, [...c].length)));
  return rows
    .map((r, ri) =>
      r
        .map((c, i) => pad(c, widths[i] ?? 0, ri > 0 && rightCols.has(i)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function renderTables(summary: Summary, status: Record<TargetName, TargetStatus>, wrk: WrkStatus): string {
  const out: string[] = [];
  const colName = (t: TargetName): string => (status[t].available ? t : `${t} (n/a)`);
  const header = ['metric', 'unit', colName('direct'), colName('haproxy'), colName('relay'), 'hap/direct', 'relay/direct', 'relay/hap', 'target', colName('relay+authorize'), 'auth/relay'];
  const rows: string[][] = [header];
  for (const m of summary.metrics) {
    const def = METRICS.find((d) => d.id === m.id)!;
    const chk = summary.checks.find((c) => CHECKS.find((d) => d.id === c.id)?.metric === m.id);
    const target = chk ? `${opSymbol(chk.op)} ${chk.value} ${chk.pass === null ? '?' : chk.pass ? '✓' : '✗'}` : '';
    rows.push([
      m.label,
      m.unit,
      cell(m.values.direct, def.digits),
      cell(m.values.haproxy, def.digits),
      cell(m.values.relay, def.digits),
      ratioText(m.ratios.haproxyVsDirect),
      ratioText(m.ratios.relayVsDirect),
      ratioText(m.ratios.relayVsHaproxy),
      target,
      cell(m.values['relay+authorize'], def.digits),
      ratioText(m.ratios.authorizeVsRelay),
    ]);
  }
  const f = summary.foreignCpuShare;
  if (f && f.median > BUSY_MACHINE_SHARE) {
    out.push(
      `WARNING: the machine was busy: other processes used ${(f.median * 100).toFixed(0)}% of all cores in the median measurement ` +
        `(max ${(f.max * 100).toFixed(0)}%). Figures and ratios below are unreliable; rerun on a quiet machine.`,
    );
  }
  out.push('Figures: median over rounds (min–max). Ratios are of medians. Latency: lower is better.');
  out.push('relay+authorize: relay asking an allow-all authorize hook before each client, new connections only; auth/relay = relay+authorize ÷ relay, the cost of the authorize hook per connection.');
  out.push('wrk→nginx: the C load generator wrk against nginx, Connection: close (each request a new TCP connection), through a second instance of each target. proxy CPU: white+gray or hop1+hop2.');
  out.push(table(rows, new Set([2, 3, 4, 5, 6, 7, 9, 10])));
  out.push('');
  out.push(...renderAuthorizeCost(summary.authorizeCost));

  // Resources: peak RSS of each proxy process and the proxies' CPU per unit of work.
  out.push('');
  out.push('Resources of the proxy processes (median over rounds): peak RSS MiB; CPU per unit of work, both hops together.');
  const rrows: string[][] = [['workload', 'hap hop1 RSS', 'hap hop2 RSS', 'hap CPU/unit', 'relay white RSS', 'relay gray RSS', 'relay CPU/unit', 'unit']];
  for (const w of WORKLOAD_IDS) {
    const h = summary.resources.find((r) => r.workload === w && r.target === 'haproxy');
    const r = summary.resources.find((x) => x.workload === w && x.target === 'relay');
    const rss = (x: ResourceSummary | undefined, p: string): string => (x?.procs[p] ? fmtNum(x.procs[p]!.peakRssMB.median, 1) : '–');
    const per = (x: ResourceSummary | undefined): string => (x?.proxyCpuPerUnit ? fmtNum(x.proxyCpuPerUnit.value.median, 2) : '–');
    const unit = h?.proxyCpuPerUnit?.label ?? r?.proxyCpuPerUnit?.label ?? '';
    rrows.push([w, rss(h, 'hop1'), rss(h, 'hop2'), per(h), rss(r, 'white'), rss(r, 'gray'), per(r), unit]);
  }
  out.push(table(rrows, new Set([1, 2, 3, 4, 5, 6])));

  // Where that CPU goes, by thread: a relay process's JavaScript (its main thread), its engine
  // threads and Node's helpers (V8's garbage collection, libuv), beside each haproxy hop.
  out.push('');
  out.push("The proxies' CPU per unit of work by thread (median over rounds; JS: a relay process's main thread, engine: its engine threads, other: Node's helper threads).");
  const trows: string[][] = [['workload', 'hap hop1', 'hap hop2', 'white JS', 'white engine', 'white other', 'gray JS', 'gray engine', 'gray other', 'unit']];
  for (const w of WORKLOAD_IDS) {
    const h = summary.resources.find((r) => r.workload === w && r.target === 'haproxy');
    const r = summary.resources.find((x) => x.workload === w && x.target === 'relay');
    if (!h?.proxyCpuPerUnit && !r?.proxyCpuPerUnit) continue;
    const us = (x: ResourceSummary | undefined, p: string, k: keyof ThreadCpu): string => {
      const v = x?.threadCpuPerUnit[p]?.[k]?.median;
      return v === undefined || !Number.isFinite(v) ? '–' : fmtNum(v, 2);
    };
    // A haproxy hop is one thread: its whole CPU is its main thread's.
    const hop = (p: string): string => {
      const parts = h?.threadCpuPerUnit[p];
      return parts ? fmtNum(parts.main.median + parts.engine.median + parts.other.median, 2) : '–';
    };
    const unit = h?.proxyCpuPerUnit?.label ?? r?.proxyCpuPerUnit?.label ?? '';
    trows.push([w, hop('hop1'), hop('hop2'), us(r, 'white', 'main'), us(r, 'white', 'engine'), us(r, 'white', 'other'), us(r, 'gray', 'main'), us(r, 'gray', 'engine'), us(r, 'gray', 'other'), unit]);
  }
  out.push(table(trows, new Set([1, 2, 3, 4, 5, 6, 7, 8])));

  if (summary.errors.length > 0) {
    out.push('');
    out.push('Errors (failed connections/streams; bulk figures of such runs are left out, other rates count only successes):');
    for (const e of summary.errors) out.push(`  ${e.target} ${e.workload} round ${e.round}: ${e.errors} error(s), first: ${e.first ?? '?'}`);
  }
  out.push('');
  out.push('Targets for relay:');
  for (const c of summary.checks) {
    const mark = c.pass === null ? '?' : c.pass ? '✓' : '✗';
    const measured = c.measured === null ? `not measured (${c.note})` : `${c.measured.toFixed(2)}${c.note ? ` (${c.note})` : ''}`;
    out.push(`  ${mark} ${pad(c.label, 48)} ${pad(`${opSymbol(c.op)} ${c.value}`, 6)} measured ${measured}`);
  }
  for (const t of TARGET_NAMES) {
    const s = status[t];
    if (!s.available) out.push(`  ${t}: unavailable: ${s.reason}`);
  }
  if (!wrk.available) out.push(`  wrk→nginx workload: unavailable: ${wrk.reason}`);
  else {
    for (const t of TARGET_NAMES) {
      const s = wrk.targets[t];
      if (s && !s.available) out.push(`  ${t} (wrk→nginx): unavailable: ${s.reason}`);
    }
  }
  return out.join('\n');
}

function renderAuthorizeCost(c: AuthorizeCost): string[] {
  const head = `The ${c.label}:`;
  if (c.unavailable !== null) return [head, `  not measured (${c.unavailable})`];
  const n = (x: number | null, digits: number): string => (x === null ? '–' : fmtNum(x, digits));
  const signed = (x: number | null, digits: number): string => (x === null ? '–' : `${x >= 0 ? '+' : '−'}${fmtNum(Math.abs(x), digits)}`);
  const lines = [
    head,
    `  rate         ${n(c.connPerSec.relayAuthorize, 0)} vs ${n(c.connPerSec.relay, 0)} conn/s   ratio ${ratioText(c.connPerSec.ratio)}`,
    `  TTFB p50     ${n(c.ttfbP50Ms.relayAuthorize, 3)} vs ${n(c.ttfbP50Ms.relay, 3)} ms   ${signed(c.ttfbP50Ms.addedMs, 3)} ms per connection`,
    `  TTFB p99     ${n(c.ttfbP99Ms.relayAuthorize, 3)} vs ${n(c.ttfbP99Ms.relay, 3)} ms   ${signed(c.ttfbP99Ms.addedMs, 3)} ms`,
    `  CPU white+gray  ${n(c.relayCpuUsPerConn.relayAuthorize, 1)} vs ${n(c.relayCpuUsPerConn.relay, 1)} µs/conn   ${signed(c.relayCpuUsPerConn.addedUs, 1)} µs per connection; the hook server itself ${n(c.hookCpuUsPerConn, 1)} µs/conn`,
  ];
  if (c.hookRequests !== null) {
    const note = c.hookRequests < c.connections ? '  FEWER THAN CONNECTIONS: the hook was not asked about every client; the column is wrong' : '';
    lines.push(`  the hook answered ${fmtNum(c.hookRequests)} requests for ${fmtNum(c.connections)} counted connections (warm-up included in the first)${note}`);
  }
  return lines;
}
