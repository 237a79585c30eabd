// Turns raw measurements into the summary (medians, spreads, ratios, checks) that goes into the
// JSON file, and prints it as tables.
import { fmtNum, median } from './common.js';
import { type CheckDef, CHECKS, METRICS, type WorkloadId, WORKLOAD_IDS, opSymbol, passes, workUnits } from './plan.js';
import type { MachineCpu, ProcUsage } from './procstat.js';
import type { TargetName } from './targets.js';
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
}

export interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

export type TargetStatus = { available: true; info: Record<string, unknown> } | { available: false; reason: string };

export interface MetricSummary {
  id: string;
  label: string;
  unit: string;
  better: 'higher' | 'lower';
  values: Partial<Record<TargetName, Stat>>;
  ratios: { haproxyVsDirect: number | null; relayVsDirect: number | null; relayVsHaproxy: number | null };
}

export interface ResourceSummary {
  workload: WorkloadId;
  target: TargetName;
  /** Per measured process (white/gray, hop1/hop2, service, loadgen). */
  procs: Record<string, { peakRssMB: Stat; cpuSec: Stat }>;
  /** CPU of the proxy processes only (white+gray or hop1+hop2) per unit of work. */
  proxyCpuPerUnit: { label: string; value: Stat } | null;
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

export interface Summary {
  metrics: MetricSummary[];
  resources: ResourceSummary[];
  checks: CheckResult[];
  /** Share of all cores used by other processes while measuring (0 = quiet machine). */
  foreignCpuShare: Stat | null;
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

const PROXY_PROCS: Record<TargetName, string[]> = { direct: [], relay: ['white', 'gray'], haproxy: ['hop1', 'hop2'] };

export function summarize(ms: readonly Measurement[], status: Record<TargetName, TargetStatus>): Summary {
  const metrics: MetricSummary[] = METRICS.map((def) => {
    const values: Partial<Record<TargetName, Stat>> = {};
    for (const t of ['direct', 'haproxy', 'relay'] as const) {
      const xs = ms.filter((m) => m.target === t && m.workload === def.workload && m.result).map((m) => def.read(m.result!));
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
      },
    };
  });

  const resources: ResourceSummary[] = [];
  for (const w of WORKLOAD_IDS) {
    for (const t of ['direct', 'haproxy', 'relay'] as const) {
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
      const proxies = PROXY_PROCS[t];
      if (proxies.length > 0) {
        let label = '';
        const vals = rows.map((r) => {
          if (!r.result) return NaN;
          const u = workUnits(r.result);
          label = u.label;
          const cpu = proxies.reduce((a, p) => a + (r.procs[p]?.cpuSec ?? NaN), 0);
          return u.units > 0 ? cpu / u.units : NaN;
        });
        const s = stat(vals);
        if (s) perUnit = { label, value: s };
      }
      resources.push({ workload: w, target: t, procs, proxyCpuPerUnit: perUnit });
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

  const foreignCpuShare = stat(ms.map((m) => m.machineCpu?.foreignShare ?? NaN));
  const errors: Summary['errors'] = [];
  for (const m of ms) {
    const n = m.result === null ? 1 : 'errors' in m.result ? m.result.errors : 0;
    const first = m.result === null ? m.error : 'firstError' in m.result ? m.result.firstError : null;
    if (n > 0) errors.push({ target: m.target, workload: m.workload, round: m.round, errors: n, first });
  }
  return { metrics, resources, checks, foreignCpuShare, errors };
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

function table(rows: string[][], rightCols: Set<number>): string {
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

export function renderTables(summary: Summary, status: Record<TargetName, TargetStatus>): string {
  const out: string[] = [];
  const colName = (t: TargetName): string => (status[t].available ? t : `${t} (n/a)`);
  const header = ['metric', 'unit', colName('direct'), colName('haproxy'), colName('relay'), 'hap/direct', 'relay/direct', 'relay/hap', 'target'];
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
  out.push(table(rows, new Set([2, 3, 4, 5, 6, 7])));

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
    out.push(`  ${mark} ${pad(c.label, 44)} ${pad(`${opSymbol(c.op)} ${c.value}`, 6)} measured ${measured}`);
  }
  for (const t of ['direct', 'haproxy', 'relay'] as const) {
    const s = status[t];
    if (!s.available) out.push(`  ${t}: unavailable: ${s.reason}`);
  }
  return out.join('\n');
}
