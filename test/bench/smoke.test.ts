// Smoke test of the benchmark harness: runs `bench/run.js --quick` as a child process and checks
// the results file's structure and that the direct column has numbers. It asserts no timing or
// ratio (the machine may be busy); it checks that the harness works, not how fast anything is.
// haproxy and the relay CLI are pointed at paths that do not exist, so the "unavailable" paths
// run on every machine, whether haproxy is installed or not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const RUN = fileURLToPath(new URL('../../bench/run.js', import.meta.url));

const METRIC_IDS = [
  'bulk_up_1', 'bulk_up_8', 'bulk_down_1', 'bulk_down_8',
  'kept_c1_rate', 'kept_c1_p50', 'kept_c1_p99', 'kept_c64_rate', 'kept_c64_p50', 'kept_c64_p99',
  'new_c64_rate', 'new_c64_ttfb_p50', 'new_c64_ttfb_p99',
];
const CHECK_IDS = ['bulk_up_1', 'bulk_down_1', 'kept_c64_rate', 'new_c64_rate', 'kept_c1_p99', 'white_rss_kept'];

interface RunOutcome {
  code: number | null;
  stdout: string;
  stderr: string;
  json: Record<string, any>;
  files: string[];
}

function runBench(args: string[], timeoutMs: number): Promise<RunOutcome> {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-bench-smoke-'));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RUN, '--quick', '--out', out, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      try {
        const files = fs.readdirSync(out);
        const jsonFile = files.find((f) => f.endsWith('.json'));
        assert.ok(jsonFile, `no results JSON in ${out}; files: ${files.join(', ')}\nstderr:\n${stderr}`);
        const json = JSON.parse(fs.readFileSync(path.join(out, jsonFile), 'utf8')) as Record<string, any>;
        resolve({ code, stdout, stderr, json, files });
      } catch (e) {
        reject(e);
      } finally {
        fs.rmSync(out, { recursive: true, force: true });
      }
    });
  });
}

function assertPositiveColumn(json: Record<string, any>, target: string): void {
  for (const id of METRIC_IDS) {
    const m = json.summary.metrics.find((x: { id: string }) => x.id === id);
    assert.ok(m, `metric ${id} missing`);
    const v = m.values[target];
    assert.ok(v, `${target} has no value for ${id}`);
    assert.ok(Number.isFinite(v.median) && v.median > 0, `${target} ${id}: median ${v.median}`);
    assert.ok(v.min <= v.median && v.median <= v.max, `${target} ${id}: spread out of order`);
  }
}

test('bench --quick: direct measured, missing haproxy and relay reported and skipped', { timeout: 90_000 }, async () => {
  const r = await runBench(['--haproxy', '/nonexistent/haproxy', '--relay-cli', '/nonexistent/relay.js'], 80_000);
  assert.equal(r.code, 0, `exit code ${r.code}\nstderr:\n${r.stderr}`);
  assert.ok(r.files.some((f) => f.endsWith('.svg')), 'no SVG chart next to the JSON');

  const j = r.json;
  assert.equal(j.schema, 'relay-bench/1');
  assert.equal(j.mode, 'quick');
  assert.ok(j.machine.cores >= 1);
  assert.equal(typeof j.machine.node, 'string');
  assert.equal(j.machine.haproxy, null, 'haproxy version must be null when the binary is missing');

  assert.equal(j.targets.direct.available, true);
  assert.equal(j.targets.haproxy.available, false);
  assert.match(j.targets.haproxy.reason, /haproxy not found/);
  assert.equal(j.targets.relay.available, false);
  assert.match(j.targets.relay.reason, /relay CLI not built/);

  assertPositiveColumn(j, 'direct');
  for (const m of j.summary.metrics) {
    assert.equal(m.values.haproxy, undefined);
    assert.equal(m.values.relay, undefined);
    assert.equal(m.ratios.relayVsHaproxy, null);
  }
  assert.ok(Array.isArray(j.summary.errors));
  assert.deepEqual(j.summary.checks.map((c: { id: string }) => c.id), CHECK_IDS);
  for (const c of j.summary.checks) assert.equal(c.pass, null, `check ${c.id} must be undecided without relay`);

  // Only direct ran: one measurement per workload, each with a result and service/loadgen usage.
  assert.equal(j.measurements.length, 7);
  for (const m of j.measurements) {
    assert.equal(m.target, 'direct');
    assert.equal(m.error, null);
    assert.ok(m.result, `${m.workload} has no result`);
    assert.ok(m.procs.service && m.procs.service.peakRssMB > 0, `${m.workload}: no service RSS`);
  }
  // The table names the reasons so a human sees why a column is empty.
  assert.match(r.stdout, /haproxy: unavailable: haproxy not found/);
  assert.match(r.stdout, /relay: unavailable: relay CLI not built/);
});

test('bench --quick with haproxy installed: chain column measured', { timeout: 90_000 }, async (t) => {
  const v = spawnSync('haproxy', ['-v'], { encoding: 'utf8' });
  if (v.error) {
    t.skip('haproxy not installed');
    return;
  }
  const r = await runBench(['--targets', 'direct,haproxy'], 80_000);
  assert.equal(r.code, 0, `exit code ${r.code}\nstderr:\n${r.stderr}`);
  assert.equal(r.json.targets.haproxy.available, true, JSON.stringify(r.json.targets.haproxy));
  assert.match(r.json.machine.haproxy, /HAProxy version/i);
  assertPositiveColumn(r.json, 'haproxy');
  // The chain's two processes were sampled.
  const kept = r.json.measurements.find((m: { target: string; workload: string }) => m.target === 'haproxy' && m.workload === 'kept-c64');
  assert.ok(kept.procs.hop1.peakRssMB > 0 && kept.procs.hop2.peakRssMB > 0);
});
