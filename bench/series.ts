// Judges the targets over a series of standard runs (--runs N, or --series on saved results).
// One run's ratio on a shared 2-core machine swings by about ±8% with the host (docs/performance.md),
// as much as several targets' margins, so a target is judged on its median over the runs; the
// table also says in how many runs it held, and in how many all of them held together.
import fs from 'node:fs';
import { median } from './common.js';
import { CHECKS, passes, opSymbol } from './plan.js';
import { type CheckResult, table } from './report.js';

/** What a series needs of one run's results file. */
export interface SeriesRun {
  readonly file: string;
  readonly checks: readonly CheckResult[];
}

export interface SeriesCheck {
  readonly id: string;
  readonly label: string;
  readonly op: CheckResult['op'];
  readonly value: number;
  /** Median, min and max of the runs' figures, over the runs that had one (null: none had). */
  readonly median: number | null;
  readonly min: number | null;
  readonly max: number | null;
  /** Runs with a figure, and how many of them met the target. */
  readonly runs: number;
  readonly met: number;
  /** The median meets the target (null: no run had a figure). */
  readonly pass: boolean | null;
}

export interface Series {
  readonly runs: number;
  /** Runs in which every target had a figure and met it. */
  readonly allMet: number;
  readonly checks: readonly SeriesCheck[];
}

export function judgeSeries(runs: readonly SeriesRun[]): Series {
  const checks = CHECKS.map((def): SeriesCheck => {
    const figures = runs.map((r) => r.checks.find((c) => c.id === def.id)?.measured ?? null).filter((x): x is number => x !== null && Number.isFinite(x));
    const base = { id: def.id, label: def.label, op: def.op, value: def.value, runs: figures.length, met: figures.filter((x) => passes(def.op, x, def.value)).length };
    if (figures.length === 0) return { ...base, median: null, min: null, max: null, pass: null };
    const m = median(figures);
    return { ...base, median: m, min: Math.min(...figures), max: Math.max(...figures), pass: passes(def.op, m, def.value) };
  });
  const allMet = runs.filter((r) => CHECKS.every((def) => r.checks.find((c) => c.id === def.id)?.pass === true)).length;
  return { runs: runs.length, allMet, checks };
}

/** A results file's checks, or a clear error naming the file. */
export function readRun(file: string): SeriesRun {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
  const j = json as { schema?: unknown; mode?: unknown; summary?: { checks?: unknown } };
  if (j.schema !== 'relay-bench/1' || !Array.isArray(j.summary?.checks)) throw new Error(`${file}: not the results file of a standard bench run (schema relay-bench/1 with summary.checks)`);
  return { file, checks: j.summary.checks as CheckResult[] };
}

export function renderSeries(s: Series): string {
  // Megabytes with one decimal, ratios with two.
  const inMB = new Set(CHECKS.filter((d) => d.kind === 'white-rss').map((d) => d.id));
  const fmt = (x: number | null, id: string): string => (x === null ? '–' : x.toFixed(inMB.has(id) ? 1 : 2));
  const rows: string[][] = [['target', 'rule', 'median', 'range', 'runs met', 'median meets']];
  for (const c of s.checks) {
    rows.push([c.label, `${opSymbol(c.op)} ${c.value}`, fmt(c.median, c.id), c.min === null ? '–' : `${fmt(c.min, c.id)}–${fmt(c.max, c.id)}`, `${c.met} of ${c.runs}`, c.pass === null ? '?' : c.pass ? '✓' : '✗']);
  }
  return [
    `Targets over ${s.runs} run(s): the median of each run's figure, its range, and the runs that met it.`,
    table(rows, new Set([2, 3, 4])),
    `Every target met in the same run: ${s.allMet} of ${s.runs}.`,
  ].join('\n');
}
