// renderMetrics output checked with a strict parser of the text exposition format 0.0.4
// (test/helpers/prometheus-text.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newGrayStats, type GraySnapshot, type WhiteSnapshot } from '../../src/engine/stats.js';
import { escapeLabelValue, renderMetrics } from '../../src/admin/metrics.js';
import { Histogram } from '../../src/engine/histogram.js';
import { VERSION } from '../../src/version.js';
import { parsePrometheusText, sampleValue, type Family } from '../helpers/prometheus-text.js';

function gray(id: string, over: Partial<GraySnapshot> = {}): GraySnapshot {
  return { ...newGrayStats(), id, publicPort: 8000, dataPort: 9000, connected: false, ...over };
}

function waited(...seconds: number[]): Histogram {
  const h = new Histogram();
  for (const s of seconds) h.observe(s);
  return h;
}

const WEIRD = 'we"ird\\id\nnext';

function snapshot(): WhiteSnapshot {
  return {
    configPath: '/etc/relay/white.yaml',
    startedAt: 1_700_000_000_500,
    grays: [
      gray('alpha', { connected: true, connectedSince: 1, remoteAddress: '10.0.0.7:5000', poolIdle: 7, poolTarget: 8, activeClients: 3, pendingClients: 1, clientsTotal: 1234, idleTimeouts: 6, dataConnectionsReused: 5, bytesFromClients: 9_007_199_254_740_000, bytesToClients: 42, clientsRefused: { RELAY_ERR_GRAY_OFFLINE: 6, RELAY_ERR_TOO_MANY_CLIENTS: 2 }, clientWait: waited(0, 0, 0.3) }),
      gray('beta', {
        clientsRefused: { RELAY_ERR_CLIENT_WAIT_TIMEOUT: 1 },
        services: [
          { name: 'ssh', publicPort: 8001, allow: ['203.0.113.0/24'], activeClients: 2, clientsTotal: 11, bytesFromClients: 100, bytesToClients: 200, clientsRefused: { RELAY_ERR_CLIENT_NOT_ALLOWED: 4 } },
          { name: 'web', publicPort: 8002, allow: [], activeClients: 0, clientsTotal: 0, bytesFromClients: 0, bytesToClients: 0, clientsRefused: {} },
        ],
      }),
      gray(WEIRD, { connected: true, poolIdle: 1, poolTarget: 2, clientsTotal: 5 }),
    ],
    counters: {
      authFailures: 17,
      dataRejections: { preamble_invalid: 4, wrong_source: 2 },
      controlRejections: { too_many_unauthenticated: 9 },
      reloads: { ok: 3, rejected: 1 },
      lastReload: { at: 1, ok: true, error: null, notApplied: ['metrics.listen: restart needed'] },
    },
    hooks: [
      { url: 'http://127.0.0.1:8080/hook?q="x"', delivered: 10, failed: 2, dropped: 1, queued: 4, lastError: 'HTTP 500' },
      { url: 'https://hooks.example/a', delivered: 0, failed: 0, dropped: 0, queued: 0, lastError: null },
    ],
  };
}

const value = (fams: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined => sampleValue(fams, name, labels);

test('renders every documented metric, parseable strictly, with the snapshot values', () => {
  const text = renderMetrics(snapshot(), 'splice');
  const fams = parsePrometheusText(text);
  assert.equal(value(fams, 'relay_service_clients_total', { gray: 'beta', service: 'ssh' }), 11);
  assert.equal(value(fams, 'relay_service_clients_active', { gray: 'beta', service: 'ssh' }), 2);
  assert.equal(value(fams, 'relay_service_client_refusals_total', { gray: 'beta', service: 'ssh', reason: 'RELAY_ERR_CLIENT_NOT_ALLOWED' }), 4);
  assert.equal(value(fams, 'relay_service_client_received_bytes_total', { gray: 'beta', service: 'ssh' }), 100);
  assert.equal(value(fams, 'relay_service_client_sent_bytes_total', { gray: 'beta', service: 'web' }), 0);

  const expectedTypes: Record<string, string> = {
    relay_build_info: 'gauge',
    process_start_time_seconds: 'gauge',
    process_cpu_seconds_total: 'counter',
    process_resident_memory_bytes: 'gauge',
    process_open_fds: 'gauge',
    process_max_fds: 'gauge',
    relay_grays_connected: 'gauge',
    relay_gray_connected: 'gauge',
    relay_pool_idle_connections: 'gauge',
    relay_pool_target_connections: 'gauge',
    relay_clients_active: 'gauge',
    relay_clients_pending: 'gauge',
    relay_clients_total: 'counter',
    relay_client_refusals_total: 'counter',
    relay_client_received_bytes_total: 'counter',
    relay_client_sent_bytes_total: 'counter',
    relay_client_wait_seconds: 'histogram',
    relay_client_idle_timeouts_total: 'counter',
    relay_data_connections_reused_total: 'counter',
    relay_service_clients_active: 'gauge',
    relay_service_clients_total: 'counter',
    relay_service_client_refusals_total: 'counter',
    relay_service_client_received_bytes_total: 'counter',
    relay_service_client_sent_bytes_total: 'counter',
    relay_data_rejections_total: 'counter',
    relay_control_rejections_total: 'counter',
    relay_auth_failures_total: 'counter',
    relay_reloads_total: 'counter',
    relay_config_not_applied: 'gauge',
    relay_gray_ports_bound: 'gauge',
    relay_gray_bind_failures_total: 'counter',
    relay_hook_deliveries_total: 'counter',
    relay_hook_queued_events: 'gauge',
    relay_hook_dropped_events_total: 'counter',
    relay_hook_request_duration_seconds: 'histogram',
  };
  assert.deepEqual(Object.fromEntries([...fams].map(([n, f]) => [n, f.type])), expectedTypes);
  for (const [name, f] of fams) assert.ok(f.help.length > 10, `${name} has a HELP text`);

  assert.equal(value(fams, 'relay_build_info', { version: VERSION, data_plane: 'splice' }), 1);
  assert.ok(value(fams, 'process_resident_memory_bytes')! > 10 * 1024 * 1024);
  assert.ok(value(fams, 'process_open_fds')! > 2);
  assert.ok(value(fams, 'process_max_fds')! >= value(fams, 'process_open_fds')!);
  assert.ok(Math.abs(value(fams, 'process_start_time_seconds')! - (Date.now() / 1000 - process.uptime())) < 5);
  assert.equal(value(fams, 'relay_grays_connected'), 2);
  assert.equal(value(fams, 'relay_config_not_applied'), 1);
  const perGray: Array<[string, keyof GraySnapshot]> = [
    ['relay_pool_idle_connections', 'poolIdle'],
    ['relay_pool_target_connections', 'poolTarget'],
    ['relay_clients_active', 'activeClients'],
    ['relay_clients_pending', 'pendingClients'],
    ['relay_clients_total', 'clientsTotal'],
    ['relay_client_received_bytes_total', 'bytesFromClients'],
    ['relay_client_sent_bytes_total', 'bytesToClients'],
    ['relay_client_idle_timeouts_total', 'idleTimeouts'],
    ['relay_data_connections_reused_total', 'dataConnectionsReused'],
  ];
  for (const g of snapshot().grays) {
    assert.equal(value(fams, 'relay_gray_connected', { gray: g.id }), g.connected ? 1 : 0);
    for (const [metric, field] of perGray) assert.equal(value(fams, metric, { gray: g.id }), g[field], `${metric}{gray=${JSON.stringify(g.id)}}`);
  }
  for (const [metric] of perGray) assert.equal(fams.get(metric)?.samples.length, 3);

  assert.equal(value(fams, 'relay_client_refusals_total', { gray: 'alpha', reason: 'RELAY_ERR_GRAY_OFFLINE' }), 6);
  assert.equal(value(fams, 'relay_client_refusals_total', { gray: 'beta', reason: 'RELAY_ERR_CLIENT_WAIT_TIMEOUT' }), 1);
  assert.equal(fams.get('relay_client_refusals_total')?.samples.length, 3);
  // alpha waited 0 s twice and 0.3 s once: the 0.25 bucket holds two, the 0.5 bucket all three.
  assert.equal(sampleValue(fams, 'relay_client_wait_seconds', { gray: 'alpha', le: '0.25' }, 'relay_client_wait_seconds_bucket'), 2);
  assert.equal(sampleValue(fams, 'relay_client_wait_seconds', { gray: 'alpha', le: '0.5' }, 'relay_client_wait_seconds_bucket'), 3);
  assert.equal(sampleValue(fams, 'relay_client_wait_seconds', { gray: 'alpha', le: '+Inf' }, 'relay_client_wait_seconds_bucket'), 3);
  assert.equal(sampleValue(fams, 'relay_client_wait_seconds', { gray: 'alpha' }, 'relay_client_wait_seconds_sum'), 0.3);
  assert.equal(sampleValue(fams, 'relay_client_wait_seconds', { gray: 'beta' }, 'relay_client_wait_seconds_count'), 0);
  assert.equal(value(fams, 'relay_data_rejections_total', { reason: 'preamble_invalid' }), 4);
  assert.equal(value(fams, 'relay_data_rejections_total', { reason: 'wrong_source' }), 2);
  assert.equal(value(fams, 'relay_control_rejections_total', { reason: 'too_many_unauthenticated' }), 9);
  assert.equal(value(fams, 'relay_auth_failures_total'), 17);
  assert.equal(value(fams, 'relay_reloads_total', { result: 'ok' }), 3);
  assert.equal(value(fams, 'relay_reloads_total', { result: 'rejected' }), 1);

  const h = 'http://127.0.0.1:8080/hook?q="x"';
  assert.equal(value(fams, 'relay_hook_deliveries_total', { url: h, result: 'delivered' }), 10);
  assert.equal(value(fams, 'relay_hook_deliveries_total', { url: h, result: 'failed' }), 2);
  assert.equal(value(fams, 'relay_hook_queued_events', { url: h }), 4);
  assert.equal(value(fams, 'relay_hook_dropped_events_total', { url: h }), 1);
  assert.equal(value(fams, 'relay_hook_queued_events', { url: 'https://hooks.example/a' }), 0);
});

test('label values with backslash, quote and newline are escaped and round-trip', () => {
  assert.equal(escapeLabelValue(WEIRD), 'we\\"ird\\\\id\\nnext');
  const text = renderMetrics(snapshot(), 'splice');
  assert.ok(text.includes('relay_pool_idle_connections{gray="we\\"ird\\\\id\\nnext"} 1\n'));
  // No raw newline inside a sample: every line is a comment or a complete sample.
  for (const line of text.trimEnd().split('\n')) assert.match(line, /^(# (HELP|TYPE) (relay|process|nodejs)_|(relay|process|nodejs)_\w+(\{.*\})? \S+$)/);
  const fams = parsePrometheusText(text);
  assert.equal(value(fams, 'relay_pool_target_connections', { gray: WEIRD }), 2);
});

test('an empty white renders valid text with zero-valued totals', () => {
  const empty: WhiteSnapshot = {
    configPath: null,
    startedAt: 0,
    grays: [],
    counters: { authFailures: 0, dataRejections: {}, controlRejections: {}, reloads: { ok: 0, rejected: 0 }, lastReload: null },
    hooks: [],
  };
  const fams = parsePrometheusText(renderMetrics(empty, 'js'));
  assert.equal(value(fams, 'relay_grays_connected'), 0);
  assert.equal(fams.get('relay_pool_idle_connections')?.samples.length, 0);
  assert.equal(value(fams, 'relay_reloads_total', { result: 'ok' }), 0);
});

test('two hooks with the same url are summed into one series (a duplicate would fail the scrape)', () => {
  const s = snapshot();
  s.hooks = [
    { url: 'http://h/x', delivered: 1, failed: 0, dropped: 2, queued: 3, lastError: null },
    { url: 'http://h/x', delivered: 10, failed: 1, dropped: 20, queued: 30, lastError: null },
  ];
  const fams = parsePrometheusText(renderMetrics(s, 'js'));
  assert.equal(value(fams, 'relay_hook_deliveries_total', { url: 'http://h/x', result: 'delivered' }), 11);
  assert.equal(value(fams, 'relay_hook_queued_events', { url: 'http://h/x' }), 33);
  assert.equal(value(fams, 'relay_hook_dropped_events_total', { url: 'http://h/x' }), 22);
});

test('the strict parser itself refuses malformed text', () => {
  const good = '# HELP a_total x\n# TYPE a_total counter\na_total{l="v"} 1\n';
  assert.doesNotThrow(() => parsePrometheusText(good));
  for (const bad of [
    good.slice(0, -1), // no final newline
    good.replace('a_total{l="v"} 1', 'a_total{l="v\\t"} 1'), // unknown escape
    good.replace('a_total{l="v"} 1', 'a_total{l="v"}  1'), // two spaces
    good.replace('a_total{l="v"} 1', 'a_total{l="v"} one'),
    good + 'a_total{l="v"} 2\n', // duplicate series
    good.replace('# TYPE a_total counter\n', ''), // no TYPE
    good.replace(/a_total/g, 'a'), // counter without _total
    `${good}\n`, // blank line
    `${good}b 1\n`, // sample without family
  ]) {
    assert.throws(() => parsePrometheusText(bad), Error, JSON.stringify(bad));
  }
});
