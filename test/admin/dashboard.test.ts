// Every query in the Grafana dashboard (deploy/grafana/relay.json) and every alert rule in
// docs/metrics.md names only series that the white or the gray actually exports: a renamed
// metric must take its panels and alerts with it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { renderGrayMetrics } from '../../src/admin/gray-metrics.js';
import { renderMetrics } from '../../src/admin/metrics.js';
import { startProcessMetrics } from '../../src/admin/process-metrics.js';
import { newGrayStats } from '../../src/engine/stats.js';
import { parsePrometheusText } from '../helpers/prometheus-text.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');

const FUNCTIONS = new Set(['rate', 'irate', 'increase', 'sum', 'avg', 'min', 'max', 'count', 'histogram_quantile', 'topk', 'bottomk', 'abs', 'delta', 'deriv', 'clamp_min', 'clamp_max', 'time', 'vector', 'scalar', 'label_replace', 'absent']);
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset']);

/** The metric names a PromQL expression selects. */
export function selectedMetrics(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // strings
    .replace(/\{[^}]*\}/g, '') // label matchers
    .replace(/\[[^\]]*\]/g, '') // ranges
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ''); // label lists
  const names = bare.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? [];
  return names.filter((n) => !FUNCTIONS.has(n) && !KEYWORDS.has(n) && !/^\d/.test(n));
}

/** Every series name the white and the gray render (histograms as _bucket, _sum, _count). */
function exported(): Set<string> {
  startProcessMetrics();
  const white = renderMetrics({
    configPath: null,
    startedAt: 0,
    grays: [{ ...newGrayStats(), id: 'g', publicPort: 1, dataPort: 2, connected: true, clientsRefused: { RELAY_ERR_GRAY_OFFLINE: 1 } }],
    counters: { authFailures: 0, dataRejections: { RELAY_ERR_PREAMBLE_INVALID: 1 }, controlRejections: { tls_error: 1 }, reloads: { ok: 0, rejected: 0 }, lastReload: null },
    hooks: [{ url: 'http://h/', delivered: 0, failed: 0, dropped: 0, queued: 0, lastError: null }],
  }, 'js');
  const gray = renderGrayMetrics({
    id: 'g',
    whites: [{ white: 'w:1', connected: true, sessions: 1, reconnects: 0, poolIdle: 1, poolTarget: 1 }],
    activeForwards: 0,
    forwardsTotal: 0,
    bytesToService: 0,
    bytesFromService: 0,
    serviceConnectFailures: 0,
  }, 'js');
  const names = new Set<string>();
  for (const text of [white, gray]) {
    for (const fam of parsePrometheusText(text).values()) for (const s of fam.samples) names.add(s.name);
  }
  return names;
}

test('every query of the Grafana dashboard names series relay exports', () => {
  const dashboard = JSON.parse(readFileSync(join(root, 'deploy/grafana/relay.json'), 'utf8')) as { panels: Array<{ title: string; targets?: Array<{ expr: string }> }> };
  const names = exported();
  const used = new Set<string>();
  let queries = 0;
  for (const panel of dashboard.panels) {
    assert.ok(panel.targets && panel.targets.length > 0, `panel "${panel.title}" has queries`);
    for (const { expr } of panel.targets) {
      queries++;
      const selected = selectedMetrics(expr);
      assert.ok(selected.length > 0, `"${expr}" selects a series`);
      for (const name of selected) {
        assert.ok(names.has(name), `panel "${panel.title}": ${name} is not exported by the white or the gray`);
        used.add(name);
      }
    }
  }
  assert.ok(queries >= 20, `${queries} queries`);
  // The series an operator watches first are on the dashboard.
  for (const name of ['relay_gray_connected', 'relay_gray_session_connected', 'relay_client_refusals_total', 'relay_pool_idle_connections', 'relay_client_wait_seconds_bucket', 'process_open_fds']) {
    assert.ok(used.has(name), `${name} is on the dashboard`);
  }
});

test('every alert in docs/metrics.md names series relay exports', () => {
  const doc = readFileSync(join(root, 'docs/metrics.md'), 'utf8');
  const exprs = [...doc.matchAll(/^\s+expr: (.+)$/gm)].map((m) => m[1]!);
  assert.ok(exprs.length >= 10, `${exprs.length} alert expressions`);
  const names = exported();
  for (const expr of exprs) for (const name of selectedMetrics(expr)) assert.ok(names.has(name), `alert "${expr}": ${name} is not exported`);
});

test('the query reader finds the metric names, not functions, labels or ranges', () => {
  assert.deepEqual(selectedMetrics('histogram_quantile(0.99, sum by (gray, le) (rate(relay_client_wait_seconds_bucket{gray="a b"}[5m])))'), ['relay_client_wait_seconds_bucket']);
  assert.deepEqual(selectedMetrics('process_open_fds / process_max_fds > 0.8'), ['process_open_fds', 'process_max_fds']);
  assert.deepEqual(selectedMetrics('relay_pool_idle_connections == 0 and relay_gray_connected == 1'), ['relay_pool_idle_connections', 'relay_gray_connected']);
});
