// Smoke test of the benchmark harness: runs `bench/run.js --quick` as a child process and checks
// the results file's structure and that the direct column has numbers. It asserts no timing or
// ratio (the machine may be busy); it checks that the harness works, not how fast anything is.
// haproxy, the relay CLI and wrk are pointed at paths that do not exist, so the "unavailable" paths
// run on every machine, whether haproxy is installed or not; a second run uses the built relay CLI
// for the relay and relay+authorize columns; a third runs the wrk→nginx workload on direct and
// relay, and needs wrk and nginx (the bench installs them with apt-get when missing; CI's
// .ci/run installs them first): it fails, never skips, without them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from '../../bench/args.js';

const RUN = fileURLToPath(new URL('../../bench/run.js', import.meta.url));
const RELAY_CLI = fileURLToPath(new URL('../../src/cli/relay.js', import.meta.url));
const NEW_CONN_METRICS = ['new_c64_rate', 'new_c64_ttfb_p50', 'new_c64_ttfb_p99'];

/** The figures every target has on the Node load generator's workloads. */
const LOADGEN_METRIC_IDS = [
  'bulk_up_1', 'bulk_up_8', 'bulk_down_1', 'bulk_down_8',
  'kept_c1_rate', 'kept_c1_p50', 'kept_c1_p99', 'kept_c64_rate', 'kept_c64_p50', 'kept_c64_p99',
  'new_c64_rate', 'new_c64_ttfb_p50', 'new_c64_ttfb_p99',
];
const WRK_METRIC_IDS = ['new_c64_wrk_rate', 'new_c64_wrk_p50', 'new_c64_wrk_p99'];
/** Proxy CPU per connection: only targets with proxy processes have it. */
const CPU_METRIC_IDS = ['new_c64_cpu', 'new_c64_wrk_cpu'];
const METRIC_IDS = [...LOADGEN_METRIC_IDS, 'new_c64_cpu', ...WRK_METRIC_IDS, 'new_c64_wrk_cpu'];
const LOADGEN_WORKLOADS = 'bulk-up-1,bulk-up-8,bulk-down-1,bulk-down-8,kept-c1,kept-c64,new-c64';
const CHECK_IDS = ['bulk_up_1', 'bulk_down_1', 'kept_c64_rate', 'new_c64_rate', 'new_c64_cpu', 'new_c64_wrk_rate', 'new_c64_wrk_cpu', 'kept_c1_p99', 'white_rss_kept'];

interface RunOutcome {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The first run's results. */
  json: Record<string, any>;
  /** Every run's results file (--runs), oldest first. */
  runFiles: string[];
  /** The series file of --runs N > 1, else null. */
  series: Record<string, any> | null;
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
        const read = (f: string): Record<string, any> => JSON.parse(fs.readFileSync(path.join(out, f), 'utf8')) as Record<string, any>;
        const runFiles = files.filter((f) => f.endsWith('.json') && !f.startsWith('series-')).sort();
        assert.ok(runFiles.length > 0, `no results JSON in ${out}; files: ${files.join(', ')}\nstderr:\n${stderr}`);
        const seriesFile = files.find((f) => f.startsWith('series-') && f.endsWith('.json'));
        resolve({ code, stdout, stderr, json: read(runFiles[0]!), runFiles, series: seriesFile ? read(seriesFile) : null, files });
      } catch (e) {
        reject(e);
      } finally {
        fs.rmSync(out, { recursive: true, force: true });
      }
    });
  });
}

function assertPositiveColumn(json: Record<string, any>, target: string, ids: readonly string[]): void {
  for (const id of ids) {
    const m = json.summary.metrics.find((x: { id: string }) => x.id === id);
    assert.ok(m, `metric ${id} missing`);
    const v = m.values[target];
    assert.ok(v, `${target} has no value for ${id}`);
    assert.ok(Number.isFinite(v.median) && v.median > 0, `${target} ${id}: median ${v.median}`);
    assert.ok(v.min <= v.median && v.median <= v.max, `${target} ${id}: spread out of order`);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('bench --quick --runs 2: direct measured, missing haproxy, relay and wrk reported and skipped, the targets judged over both runs', { timeout: 120_000 }, async () => {
  const r = await runBench(['--runs', '2', '--haproxy', '/nonexistent/haproxy', '--relay-cli', '/nonexistent/relay.js', '--wrk', '/nonexistent/wrk'], 110_000);
  assert.equal(r.code, 0, `exit code ${r.code}\nstderr:\n${r.stderr}`);
  // Two runs, each with its own results, then the series over them: no target has a figure
  // without relay and haproxy, so none is judged and no run met them all.
  assert.equal(r.runFiles.length, 2, `files: ${r.files.join(', ')}`);
  assert.match(r.stdout, /=== run 1 of 2[\s\S]*=== run 2 of 2/);
  assert.ok(r.series, `no series file; files: ${r.files.join(', ')}`);
  assert.equal(r.series.schema, 'relay-bench-series/1');
  assert.deepEqual(r.series.files, r.runFiles);
  assert.equal(r.series.series.runs, 2);
  assert.equal(r.series.series.allMet, 0);
  assert.deepEqual(r.series.series.checks.map((c: { id: string }) => c.id), CHECK_IDS);
  for (const c of r.series.series.checks) assert.deepEqual([c.runs, c.median, c.pass], [0, null, null], c.id);
  assert.match(r.stdout, /Targets over 2 run\(s\)/);
  assert.match(r.stdout, /Every target met in the same run: 0 of 2\./);
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
  // The authorize column is on by default; without a relay CLI it says why it is empty.
  assert.equal(j.targets['relay+authorize'].available, false);
  assert.match(j.targets['relay+authorize'].reason, /relay CLI not built/);
  assert.deepEqual(j.settings.authorize, { timeoutMs: 1000, onTimeout: 'deny', grayLogin: false, clientConnect: true, workloads: ['new-c64'] });
  assert.match(j.summary.authorizeCost.unavailable, /relay\+authorize unavailable: relay CLI not built/);

  // A wrk given by path is never installed: the workload says it is missing.
  assert.equal(j.wrk.available, false);
  assert.match(j.wrk.reason, /not found: \/nonexistent\/wrk/);
  assert.deepEqual(j.summary.metrics.map((m: { id: string }) => m.id), METRIC_IDS);
  assertPositiveColumn(j, 'direct', LOADGEN_METRIC_IDS);
  for (const m of j.summary.metrics) {
    if (!LOADGEN_METRIC_IDS.includes(m.id)) assert.equal(m.values.direct, undefined, `direct has ${m.id} without wrk or proxies`);
    assert.equal(m.values.haproxy, undefined);
    assert.equal(m.values.relay, undefined);
    assert.equal(m.values['relay+authorize'], undefined);
    assert.equal(m.ratios.relayVsHaproxy, null);
    assert.equal(m.ratios.authorizeVsRelay, null);
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
  assert.match(r.stdout, /relay\+authorize: unavailable: relay CLI not built/);
  assert.match(r.stdout, /wrk→nginx workload: unavailable: not found: \/nonexistent\/wrk/);
  assert.match(r.stdout, /cost of the authorize hook per connection[^\n]*:\n\s+not measured \(relay\+authorize unavailable/);
});

test('bench options: the relay+authorize column is on by default and --no-authorize skips it', () => {
  const def = parseArgs(['--quick']);
  assert.equal(def.authorize, true);
  assert.ok(def.targets.includes('relay+authorize'));
  const off = parseArgs(['--quick', '--no-authorize']);
  assert.equal(off.authorize, false);
  assert.deepEqual(off.targets, ['direct', 'relay', 'haproxy']);
  assert.deepEqual(parseArgs(['--targets', 'relay,relay+authorize']).targets, ['relay', 'relay+authorize']);
});

test('bench options: --workloads picks workloads in the standard order, all by default; --wrk and --nginx take a binary', () => {
  const def = parseArgs(['--quick']);
  assert.deepEqual(def.workloads, [...LOADGEN_WORKLOADS.split(','), 'new-c64-wrk']);
  assert.equal(def.wrkBin, 'wrk');
  assert.equal(def.nginxBin, 'nginx');
  assert.deepEqual(parseArgs(['--workloads', 'new-c64-wrk,new-c64']).workloads, ['new-c64', 'new-c64-wrk']);
  assert.throws(() => parseArgs(['--workloads', 'new-c64,new-c128']), /--workloads: unknown workload "new-c128"/);
  const o = parseArgs(['--wrk', '/opt/wrk', '--nginx', '/opt/nginx']);
  assert.equal(o.wrkBin, '/opt/wrk');
  assert.equal(o.nginxBin, '/opt/nginx');
});

test('bench --quick with the built relay CLI: relay and relay+authorize columns measured', { timeout: 90_000 }, async () => {
  assert.ok(fs.existsSync(RELAY_CLI), `relay CLI not built at ${RELAY_CLI}`);
  // 1 s windows rather than quick's 0.3 s: on a machine loaded by the rest of the suite, 0.3 s
  // of new connections through relay+authorize can count none, and this test checks > 0.
  const r = await runBench(['--targets', 'relay,relay+authorize', '--workloads', LOADGEN_WORKLOADS, '--relay-cli', RELAY_CLI, '--seconds', '1'], 80_000);
  assert.equal(r.code, 0, `exit code ${r.code}\nstderr:\n${r.stderr}`);
  const j = r.json;
  assert.equal(j.targets.relay.available, true, JSON.stringify(j.targets.relay));
  assert.equal(j.targets['relay+authorize'].available, true, JSON.stringify(j.targets['relay+authorize']));
  assert.equal(j.targets['relay+authorize'].info.authorize.clientConnect, true);
  assertPositiveColumn(j, 'relay', [...LOADGEN_METRIC_IDS, 'new_c64_cpu']);
  // Each relay process's CPU is also split by thread: its JavaScript (the main thread), its
  // engine threads (named relay-engine-N) and Node's helpers. On the JS plane there is no engine.
  const jsPlane = process.env.RELAY_DATA_PLANE === 'js';
  const relayRuns = j.measurements.filter((m: { target: string }) => m.target === 'relay');
  for (const side of ['white', 'gray']) {
    const parts = relayRuns.map((m: any) => m.procs[side].threads);
    assert.ok(parts.every((t: any) => t && t.main >= 0 && t.engine >= 0 && t.other >= 0), `${side}: ${JSON.stringify(parts)}`);
    const engine = parts.reduce((a: number, t: any) => a + t.engine, 0);
    const main = parts.reduce((a: number, t: any) => a + t.main, 0);
    if (jsPlane) assert.equal(engine, 0, `${side}: engine-thread CPU on the JS plane`);
    else assert.ok(engine > 0, `${side}: no engine-thread CPU over ${parts.length} runs`);
    assert.ok(main > 0, `${side}: no main-thread CPU over ${parts.length} runs`);
    const split = j.summary.resources.find((x: any) => x.target === 'relay' && x.workload === 'new-c64').threadCpuPerUnit[side];
    for (const k of ['main', 'engine', 'other']) assert.ok(Number.isFinite(split[k].median) && split[k].median >= 0, `${side} ${k}: ${JSON.stringify(split[k])}`);
  }
  assert.match(r.stdout, /CPU per unit of work by thread/);
  assert.equal(j.wrk.available, false);
  assert.match(j.wrk.reason, /not requested/);

  // relay+authorize: the new-connection figures only, each with its ratio to plain relay.
  for (const m of j.summary.metrics) {
    if (NEW_CONN_METRICS.includes(m.id) || m.id === 'new_c64_cpu') {
      const v = m.values['relay+authorize'];
      assert.ok(v && Number.isFinite(v.median) && v.median > 0, `relay+authorize ${m.id}: ${JSON.stringify(v)}`);
      assert.ok(Number.isFinite(m.ratios.authorizeVsRelay) && m.ratios.authorizeVsRelay > 0, `${m.id} ratio ${m.ratios.authorizeVsRelay}`);
    } else {
      assert.equal(m.values['relay+authorize'], undefined, `relay+authorize must not run ${m.id}`);
      assert.equal(m.ratios.authorizeVsRelay, null);
    }
  }
  const runs = j.measurements.filter((m: { target: string }) => m.target === 'relay+authorize');
  assert.deepEqual(runs.map((m: { workload: string }) => m.workload), ['new-c64']);
  const [run] = runs;
  assert.ok(run.procs.authorize && run.procs.authorize.cpuSec >= 0, 'the hook server was sampled');
  // The hook was really asked: at least once per counted connection.
  assert.ok(run.result.connections > 0);
  assert.ok(run.hookRequests >= run.result.connections, `hook answered ${run.hookRequests} for ${run.result.connections} connections`);

  const cost = j.summary.authorizeCost;
  assert.equal(cost.unavailable, null);
  assert.equal(cost.workload, 'new-c64');
  assert.ok(cost.connPerSec.ratio > 0);
  assert.equal(typeof cost.ttfbP50Ms.addedMs, 'number');
  assert.equal(cost.hookRequests, run.hookRequests);
  assert.match(r.stdout, /relay\+authorize/);
  assert.match(r.stdout, /cost of the authorize hook per connection[^\n]*:\n\s+rate\s/);
});

/** The wrk measurements of a run: each a new TCP connection per request, nginx and wrk sampled. */
function assertWrkRuns(j: Record<string, any>, targets: readonly string[]): void {
  const runs = j.measurements.filter((m: { workload: string }) => m.workload === 'new-c64-wrk');
  assert.deepEqual(runs.map((m: { target: string }) => m.target).sort(), [...targets].sort());
  for (const m of runs) {
    assert.equal(m.error, null, `${m.target}: ${m.error}`);
    assert.equal(m.result.kind, 'wrk');
    assert.ok(m.result.connections > 0, `${m.target}: no connection completed`);
    assert.equal(m.result.errors, 0, `${m.target}: ${m.result.firstError}`);
    // Every response came on its own TCP connection: nginx accepted at least as many connections
    // as wrk completed requests, and answered no more requests than it accepted connections
    // (with keep-alive, 64 connections would carry them all).
    assert.ok(m.nginx.accepts >= m.result.connections, `${m.target}: nginx accepted ${m.nginx.accepts} for ${m.result.connections} responses`);
    assert.ok(m.nginx.requests <= m.nginx.accepts, `${m.target}: nginx answered ${m.nginx.requests} requests on ${m.nginx.accepts} connections`);
    // wrk's CPU (read once it exited) and nginx's were measured.
    assert.ok(m.procs.loadgen.cpuSec >= 0 && m.procs.loadgen.peakRssMB > 0, `${m.target}: wrk ${JSON.stringify(m.procs.loadgen)}`);
    assert.ok(m.procs.service.cpuSec >= 0, `${m.target}: nginx ${JSON.stringify(m.procs.service)}`);
  }
  // CPU comes in clock ticks (10 ms): over all runs (direct's alone makes thousands of
  // connections) neither can be zero.
  assert.ok(runs.reduce((a: number, m: any) => a + m.procs.loadgen.cpuSec, 0) > 0, 'no wrk CPU measured');
  assert.ok(runs.reduce((a: number, m: any) => a + m.procs.service.cpuSec, 0) > 0, 'no nginx CPU measured');
  // One nginx serves every target's wrk runs, and it is not the Node service.
  assert.equal(new Set(runs.map((m: any) => m.procs.service.pid)).size, 1);
  const other = j.measurements.find((m: { workload: string }) => m.workload !== 'new-c64-wrk');
  if (other) assert.notEqual(other.procs.service.pid, runs[0].procs.service.pid);
}

test('bench --quick wrk→nginx: direct and relay measured with wrk against nginx, installed when missing', { timeout: 120_000 }, async () => {
  assert.ok(fs.existsSync(RELAY_CLI), `relay CLI not built at ${RELAY_CLI}`);
  const r = await runBench(['--targets', 'direct,relay', '--workloads', 'new-c64,new-c64-wrk', '--relay-cli', RELAY_CLI, '--seconds', '1'], 110_000);
  assert.equal(r.code, 0, `exit code ${r.code}\nstderr:\n${r.stderr}`);
  const j = r.json;
  // Not a skip: without wrk and nginx (and no way to install them) this workload is missing, and that is a failure.
  assert.equal(j.wrk.available, true, `wrk→nginx workload unavailable: ${j.wrk.reason}`);
  assert.match(j.wrk.wrk, /^wrk /);
  assert.match(j.wrk.nginx, /nginx\//);
  assert.ok(Array.isArray(j.wrk.installed));
  assert.equal(j.wrk.targets.direct.available, true, JSON.stringify(j.wrk.targets.direct));
  assert.equal(j.wrk.targets.relay.available, true, JSON.stringify(j.wrk.targets.relay));
  // relay's wrk instance is its own white and gray, whose gray forwards to nginx.
  assert.notEqual(j.wrk.targets.relay.info.grayConfig, j.targets.relay.info.grayConfig);
  assert.deepEqual(j.settings.workloads.map((w: { id: string }) => w.id), ['new-c64', 'new-c64-wrk']);
  const w = j.settings.workloads[1];
  assert.equal(w.kind, 'wrk');
  assert.equal(w.concurrency, 64);

  assertPositiveColumn(j, 'direct', WRK_METRIC_IDS);
  assertPositiveColumn(j, 'relay', [...WRK_METRIC_IDS, ...CPU_METRIC_IDS]);
  for (const id of CPU_METRIC_IDS) {
    const m = j.summary.metrics.find((x: { id: string }) => x.id === id);
    assert.equal(m.values.direct, undefined, `direct has no proxy, so no ${id}`);
  }
  const rate = j.summary.metrics.find((x: { id: string }) => x.id === 'new_c64_wrk_rate');
  assert.ok(rate.ratios.relayVsDirect > 0);
  assert.equal(rate.ratios.relayVsHaproxy, null);
  assertWrkRuns(j, ['direct', 'relay']);
  // The relay column's CPU per connection is white + gray over wrk's completed requests.
  const run = j.measurements.find((m: { target: string; workload: string }) => m.target === 'relay' && m.workload === 'new-c64-wrk');
  const cpu = j.summary.metrics.find((x: { id: string }) => x.id === 'new_c64_wrk_cpu').values.relay.median;
  assert.ok(Math.abs(cpu - ((run.procs.white.cpuSec + run.procs.gray.cpuSec) / run.result.connections) * 1e6) < 1e-6 * cpu);
  const wrkRes = j.summary.resources.find((x: { workload: string; target: string }) => x.workload === 'new-c64-wrk' && x.target === 'relay');
  assert.equal(wrkRes.proxyCpuPerUnit.label, 'CPU µs/conn');

  // nginx, the bench's child, was stopped by its pid.
  assert.equal(alive(run.procs.service.pid), false, `nginx (pid ${run.procs.service.pid}) still running after the bench`);
  assert.match(r.stdout, /new conn c64 wrk→nginx, rate/);
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
  assertPositiveColumn(r.json, 'haproxy', [...METRIC_IDS]);
  assertWrkRuns(r.json, ['direct', 'haproxy']);
  // The chain's two processes were sampled.
  const kept = r.json.measurements.find((m: { target: string; workload: string }) => m.target === 'haproxy' && m.workload === 'kept-c64');
  assert.ok(kept.procs.hop1.peakRssMB > 0 && kept.procs.hop2.peakRssMB > 0);
});
