// Judging the targets over a series of runs: the arithmetic on runs made up here (each target's
// median, range and count of runs that met it; the runs that met all), the --series command on
// results files written here, and the options' bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from '../../bench/args.js';
import { CHECKS, passes } from '../../bench/plan.js';
import type { CheckResult } from '../../bench/report.js';
import { judgeSeries, type SeriesRun } from '../../bench/series.js';

const RUN = fileURLToPath(new URL('../../bench/run.js', import.meta.url));

/** One run's checks: each target's figure from figures (missing: no figure, as without haproxy). */
function run(file: string, figures: Record<string, number>): SeriesRun {
  const checks: CheckResult[] = CHECKS.map((c) => {
    const measured = figures[c.id] ?? null;
    return { id: c.id, label: c.label, op: c.op, value: c.value, measured, pass: measured === null ? null : passes(c.op, measured, c.value), note: '' };
  });
  return { file, checks };
}

/** Figures that meet every target, each ratio moved by delta toward failing it. */
function allMet(delta = 0): Record<string, number> {
  return Object.fromEntries(CHECKS.map((c) => [c.id, c.kind === 'white-rss' ? c.value * 0.9 : c.op === '>=' ? c.value * 1.1 - delta : c.value * 0.9 + delta]));
}

test('series: each target is judged on its median over the runs, with its range and the runs that met it', () => {
  const runs = [
    run('a', { ...allMet(), new_c64_rate: 0.95 }),
    run('b', { ...allMet(), new_c64_rate: 1.08, bulk_up_1: 1.1 }),
    run('c', { ...allMet(), new_c64_rate: 1.12 }),
    run('d', allMet()),
  ];
  const s = judgeSeries(runs);
  assert.equal(s.runs, 4);
  // a misses the rate, b bulk upload: only c and d met every target.
  assert.equal(s.allMet, 2);
  const rate = s.checks.find((c) => c.id === 'new_c64_rate')!;
  // 0.95, 1.08, 1.1 and 1.12: the median is between the middle two.
  assert.ok(Math.abs(rate.median! - 1.09) < 1e-9, String(rate.median));
  assert.deepEqual([rate.min, rate.max, rate.runs, rate.met, rate.pass], [0.95, 1.12, 4, 3, true]);
  const bulk = s.checks.find((c) => c.id === 'bulk_up_1')!;
  assert.equal(bulk.met, 3);
  assert.ok(Math.abs(bulk.median! - 1.32) < 1e-9, String(bulk.median));
  assert.equal(bulk.pass, true);
  // A lower-is-better target: the median of 0.9, 1.05 and 1.1 misses it.
  const cpu = judgeSeries([run('a', { new_c64_cpu: 0.9 }), run('b', { new_c64_cpu: 1.05 }), run('c', { new_c64_cpu: 1.1 })]).checks.find((c) => c.id === 'new_c64_cpu')!;
  assert.deepEqual([cpu.median, cpu.met, cpu.runs, cpu.pass], [1.05, 1, 3, false]);
});

test('series: a target no run measured is undecided, and a run missing a figure did not meet all targets', () => {
  const partial = allMet();
  delete partial.kept_c64_rate;
  const s = judgeSeries([run('a', partial), run('b', allMet())]);
  assert.equal(s.allMet, 1);
  const kept = s.checks.find((c) => c.id === 'kept_c64_rate')!;
  assert.deepEqual([kept.runs, kept.met, kept.median, kept.pass], [1, 1, 1.1, true]);
  const none = judgeSeries([run('a', {}), run('b', {})]);
  assert.equal(none.allMet, 0);
  for (const c of none.checks) assert.deepEqual([c.runs, c.median, c.min, c.max, c.pass], [0, null, null, null, null], c.id);
});

function withDir(fn: (dir: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-bench-series-'));
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('bench --series: judges saved results files and names a file that is not one', () => {
  withDir((dir) => {
    const files = [allMet(), { ...allMet(), white_rss_kept: 61.5 }, allMet(0.15)].map((figures, i) => {
      const file = path.join(dir, `run${i}.json`);
      fs.writeFileSync(file, JSON.stringify({ schema: 'relay-bench/1', mode: 'standard', summary: { checks: run(file, figures).checks } }));
      return file;
    });
    const ok = spawnSync(process.execPath, [RUN, '--series', ...files], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /Targets over 3 run\(s\)/);
    // Run 1 misses the RSS, run 2 (moved by 0.15) the ratio targets near their bounds.
    assert.match(ok.stdout, /white peak RSS under kept-conn load \(MiB\)\s+< 60\s+54\.0\s+54\.0–61\.5\s+2 of 3\s+✓/);
    assert.match(ok.stdout, /new-conn rate c64, relay\/haproxy\s+≥ 1\s+1\.10\s+0\.95–1\.10\s+2 of 3\s+✓/);
    assert.match(ok.stdout, /Every target met in the same run: 1 of 3\./);

    const other = path.join(dir, 'other.json');
    fs.writeFileSync(other, JSON.stringify({ schema: 'relay-bench-series/1' }));
    const bad = spawnSync(process.execPath, [RUN, '--series', files[0]!, other], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, new RegExp(`${other.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: not the results file of a standard bench run`));
    const missing = spawnSync(process.execPath, [RUN, '--series', path.join(dir, 'nope.json')], { encoding: 'utf8' });
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /nope\.json: ENOENT/);
  });
});

test('bench options: --runs takes a positive count for standard and quick runs; --series takes files until the next option', () => {
  assert.equal(parseArgs([]).runs, 1);
  assert.equal(parseArgs(['--runs', '5']).runs, 5);
  assert.equal(parseArgs(['--quick', '--runs', '2']).runs, 2);
  assert.throws(() => parseArgs(['--runs', '0']), /--runs: expected a positive integer, got "0"/);
  assert.throws(() => parseArgs(['--runs', '2', '--scale']), /--runs: only standard and --quick runs repeat, not --scale/);
  assert.throws(() => parseArgs(['--series']), /--series needs at least one results file/);
  assert.throws(() => parseArgs(['--series', '--rounds', '2']), /--series needs at least one results file/);
  const o = parseArgs(['--series', 'a.json', 'b.json', '--out', 'x']);
  assert.equal(o.mode, 'series');
  assert.deepEqual(o.seriesFiles, [path.resolve('a.json'), path.resolve('b.json')]);
});
