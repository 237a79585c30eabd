// renderMetrics output checked with a strict parser of the text exposition format 0.0.4, written
// here (not in src/) so the renderer is judged by an independent reading of the format.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newGrayStats, type GraySnapshot, type WhiteSnapshot } from '../../src/engine/stats.js';
import { escapeLabelValue, renderMetrics } from '../../src/admin/metrics.js';

interface Sample {
  labels: Record<string, string>;
  value: number;
}
interface Family {
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * A strict parser: each family is HELP then TYPE then its samples, contiguous, declared once;
 * no blank lines, no comments of other kinds, the text ends with a newline, label values use only
 * the three escapes, no duplicate series, values are numbers. Throws on anything else.
 */
function parsePrometheusText(text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('must end with a newline');
  const lines = text.slice(0, -1).split('\n');
  const families = new Map<string, Family>();
  let current: string | null = null;
  let lastHelp: string | null = null;
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${JSON.stringify(line)}`;
    if (line === '') throw new Error(`${where}: blank line`);
    if (line.startsWith('# HELP ')) {
      const rest = line.slice(7);
      const sp = rest.indexOf(' ');
      const name = sp === -1 ? rest : rest.slice(0, sp);
      if (!NAME.test(name)) throw new Error(`${where}: bad name`);
      if (families.has(name)) throw new Error(`${where}: family declared twice`);
      const help = sp === -1 ? '' : unescapeHelp(rest.slice(sp + 1), where);
      families.set(name, { type: '', help, samples: [] });
      lastHelp = name;
      current = null;
      return;
    }
    if (line.startsWith('# TYPE ')) {
      const m = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      if (!m) throw new Error(`${where}: bad TYPE`);
      const name = m[1]!;
      if (name !== lastHelp) throw new Error(`${where}: TYPE must follow HELP of the same family`);
      families.get(name)!.type = m[2]!;
      current = name;
      lastHelp = null;
      return;
    }
    if (line.startsWith('#')) throw new Error(`${where}: unexpected comment`);
    const { name, labels, value } = parseSample(line, where);
    if (name !== current) throw new Error(`${where}: sample outside its family block (current ${current})`);
    const fam = families.get(name)!;
    const key = JSON.stringify(Object.entries(labels).sort());
    if (fam.samples.some((s) => JSON.stringify(Object.entries(s.labels).sort()) === key)) throw new Error(`${where}: duplicate series`);
    fam.samples.push({ labels, value });
  });
  for (const [name, fam] of families) {
    if (fam.type === '') throw new Error(`${name}: HELP without TYPE`);
    if (fam.type === 'counter' && !name.endsWith('_total')) throw new Error(`${name}: counter without _total`);
  }
  return families;
}

function unescapeHelp(s: string, where: string): string {
  return s.replace(/\\(.?)/g, (_, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    throw new Error(`${where}: bad escape in HELP`);
  });
}

function parseSample(line: string, where: string): { name: string; labels: Record<string, string>; value: number } {
  let i = 0;
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
  if (!nameMatch) throw new Error(`${where}: bad metric name`);
  const name = nameMatch[0];
  i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    while (line[i] !== '}') {
      const lm = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
      if (!lm || !LABEL.test(lm[0])) throw new Error(`${where}: bad label name at ${i}`);
      const lname = lm[0];
      i += lname.length;
      if (line[i] !== '=' || line[i + 1] !== '"') throw new Error(`${where}: expected =" at ${i}`);
      i += 2;
      let value = '';
      for (;;) {
        const ch = line[i];
        if (ch === undefined) throw new Error(`${where}: unterminated label value`);
        if (ch === '"') break;
        if (ch === '\\') {
          const e = line[i + 1];
          if (e === '\\') value += '\\';
          else if (e === '"') value += '"';
          else if (e === 'n') value += '\n';
          else throw new Error(`${where}: bad escape \\${e}`);
          i += 2;
          continue;
        }
        value += ch;
        i++;
      }
      i++; // closing quote
      if (lname in labels) throw new Error(`${where}: label ${lname} twice`);
      labels[lname] = value;
      if (line[i] === ',') i++;
      else if (line[i] !== '}') throw new Error(`${where}: expected , or } at ${i}`);
    }
    i++;
  }
  if (line[i] !== ' ') throw new Error(`${where}: expected one space before the value`);
  const rest = line.slice(i + 1);
  if (!/^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)$/.test(rest)) throw new Error(`${where}: bad value ${rest}`);
  const value = rest === '+Inf' ? Infinity : rest === '-Inf' ? -Infinity : Number(rest);
  return { name, labels, value };
}

function gray(id: string, over: Partial<GraySnapshot> = {}): GraySnapshot {
  return { ...newGrayStats(), id, publicPort: 8000, dataPort: 9000, connected: false, ...over };
}

const WEIRD = 'we"ird\\id\nnext';

function snapshot(): WhiteSnapshot {
  return {
    configPath: '/etc/relay/white.yaml',
    startedAt: 1_700_000_000_500,
    grays: [
      gray('alpha', { connected: true, connectedSince: 1, remoteAddress: '10.0.0.7:5000', poolIdle: 7, poolTarget: 8, activeClients: 3, pendingClients: 1, clientsTotal: 1234, idleTimeouts: 6, bytesFromClients: 9_007_199_254_740_000, bytesToClients: 42 }),
      gray('beta'),
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

/** value of the sample with exactly these labels */
function value(fams: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const fam = fams.get(name);
  if (!fam) throw new Error(`no family ${name}`);
  const want = JSON.stringify(Object.entries(labels).sort());
  return fam.samples.find((s) => JSON.stringify(Object.entries(s.labels).sort()) === want)?.value;
}

test('renders every documented metric, parseable strictly, with the snapshot values', () => {
  const text = renderMetrics(snapshot());
  const fams = parsePrometheusText(text);

  const expectedTypes: Record<string, string> = {
    relay_start_time_seconds: 'gauge',
    relay_grays_connected: 'gauge',
    relay_gray_connected: 'gauge',
    relay_pool_idle: 'gauge',
    relay_pool_target: 'gauge',
    relay_clients_active: 'gauge',
    relay_clients_pending: 'gauge',
    relay_clients_total: 'counter',
    relay_bytes_from_clients_total: 'counter',
    relay_bytes_to_clients_total: 'counter',
    relay_client_idle_timeouts_total: 'counter',
    relay_data_rejections_total: 'counter',
    relay_control_rejections_total: 'counter',
    relay_auth_failures_total: 'counter',
    relay_reloads_total: 'counter',
    relay_config_not_applied: 'gauge',
    relay_gray_ports_bound: 'gauge',
    relay_gray_bind_failures_total: 'counter',
    relay_hook_deliveries_total: 'counter',
    relay_hook_queue: 'gauge',
    relay_hook_dropped_total: 'counter',
  };
  assert.deepEqual(Object.fromEntries([...fams].map(([n, f]) => [n, f.type])), expectedTypes);
  for (const [name, f] of fams) assert.ok(f.help.length > 10, `${name} has a HELP text`);

  assert.equal(value(fams, 'relay_start_time_seconds'), 1_700_000_000.5);
  assert.equal(value(fams, 'relay_grays_connected'), 2);
  assert.equal(value(fams, 'relay_config_not_applied'), 1);
  const perGray: Array<[string, keyof GraySnapshot]> = [
    ['relay_pool_idle', 'poolIdle'],
    ['relay_pool_target', 'poolTarget'],
    ['relay_clients_active', 'activeClients'],
    ['relay_clients_pending', 'pendingClients'],
    ['relay_clients_total', 'clientsTotal'],
    ['relay_bytes_from_clients_total', 'bytesFromClients'],
    ['relay_bytes_to_clients_total', 'bytesToClients'],
    ['relay_client_idle_timeouts_total', 'idleTimeouts'],
  ];
  for (const g of snapshot().grays) {
    assert.equal(value(fams, 'relay_gray_connected', { gray: g.id }), g.connected ? 1 : 0);
    for (const [metric, field] of perGray) assert.equal(value(fams, metric, { gray: g.id }), g[field], `${metric}{gray=${JSON.stringify(g.id)}}`);
  }
  for (const [metric] of perGray) assert.equal(fams.get(metric)?.samples.length, 3);

  assert.equal(value(fams, 'relay_data_rejections_total', { reason: 'preamble_invalid' }), 4);
  assert.equal(value(fams, 'relay_data_rejections_total', { reason: 'wrong_source' }), 2);
  assert.equal(value(fams, 'relay_control_rejections_total', { reason: 'too_many_unauthenticated' }), 9);
  assert.equal(value(fams, 'relay_auth_failures_total'), 17);
  assert.equal(value(fams, 'relay_reloads_total', { result: 'ok' }), 3);
  assert.equal(value(fams, 'relay_reloads_total', { result: 'rejected' }), 1);

  const h = 'http://127.0.0.1:8080/hook?q="x"';
  assert.equal(value(fams, 'relay_hook_deliveries_total', { url: h, result: 'delivered' }), 10);
  assert.equal(value(fams, 'relay_hook_deliveries_total', { url: h, result: 'failed' }), 2);
  assert.equal(value(fams, 'relay_hook_queue', { url: h }), 4);
  assert.equal(value(fams, 'relay_hook_dropped_total', { url: h }), 1);
  assert.equal(value(fams, 'relay_hook_queue', { url: 'https://hooks.example/a' }), 0);
});

test('label values with backslash, quote and newline are escaped and round-trip', () => {
  assert.equal(escapeLabelValue(WEIRD), 'we\\"ird\\\\id\\nnext');
  const text = renderMetrics(snapshot());
  assert.ok(text.includes('relay_pool_idle{gray="we\\"ird\\\\id\\nnext"} 1\n'));
  // No raw newline inside a sample: every line is a comment or a complete sample.
  for (const line of text.trimEnd().split('\n')) assert.match(line, /^(# (HELP|TYPE) relay_|relay_\w+(\{.*\})? \S+$)/);
  const fams = parsePrometheusText(text);
  assert.equal(value(fams, 'relay_pool_target', { gray: WEIRD }), 2);
});

test('an empty white renders valid text with zero-valued totals', () => {
  const empty: WhiteSnapshot = {
    configPath: null,
    startedAt: 0,
    grays: [],
    counters: { authFailures: 0, dataRejections: {}, controlRejections: {}, reloads: { ok: 0, rejected: 0 }, lastReload: null },
    hooks: [],
  };
  const fams = parsePrometheusText(renderMetrics(empty));
  assert.equal(value(fams, 'relay_grays_connected'), 0);
  assert.equal(fams.get('relay_pool_idle')?.samples.length, 0);
  assert.equal(value(fams, 'relay_reloads_total', { result: 'ok' }), 0);
});

test('two hooks with the same url are summed into one series (a duplicate would fail the scrape)', () => {
  const s = snapshot();
  s.hooks = [
    { url: 'http://h/x', delivered: 1, failed: 0, dropped: 2, queued: 3, lastError: null },
    { url: 'http://h/x', delivered: 10, failed: 1, dropped: 20, queued: 30, lastError: null },
  ];
  const fams = parsePrometheusText(renderMetrics(s));
  assert.equal(value(fams, 'relay_hook_deliveries_total', { url: 'http://h/x', result: 'delivered' }), 11);
  assert.equal(value(fams, 'relay_hook_queue', { url: 'http://h/x' }), 33);
  assert.equal(value(fams, 'relay_hook_dropped_total', { url: 'http://h/x' }), 22);
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
