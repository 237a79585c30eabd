// Loading configs: valid files, every kind of invalid file with its exact message, all errors at
// once, duplicate keys, defaults, relative paths, and the examples shipped in examples/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, RelayError } from '../../src/errors.js';
import { DEFAULT_LIMITS } from '../../src/limits.js';
import { loadGrayConfig, loadWhiteConfig, parseGrayConfig, parseWhiteConfig, verifyConfigFile } from '../../src/config/load.js';
import { camelCase, graySchema, snakeCase, whiteSchema } from '../../src/config/schema.js';
import { generateSecret } from '../../src/config/secret.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const S1 = generateSecret();
const S2 = generateSecret();

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'relay-load-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function writeConfig(dir: string, name: string, text: string): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, text);
  return file;
}

/** The error a load throws; fails the test when it does not throw. */
async function loadError(promise: Promise<unknown>): Promise<RelayError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof RelayError, `expected a RelayError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the load to fail');
}

function errorsOf(err: RelayError): string[] {
  const errors = err.details.errors;
  assert.ok(Array.isArray(errors));
  return errors as string[];
}

const MINIMAL_WHITE = `control:
  listen: "0.0.0.0:7000"
grays:
  - id: office-nas
    secret: "${S1}"
    public_port: 20000
    data_port: 20001
`;

test('a minimal white config loads with every default filled in', async (t) => {
  const dir = await tempDir(t);
  const file = await writeConfig(dir, 'white.yaml', MINIMAL_WHITE);
  const c = await loadWhiteConfig(file);
  assert.equal(c.path, file);
  assert.deepEqual(c.control, { host: '0.0.0.0', port: 7000 });
  assert.equal(c.bind, '0.0.0.0');
  assert.equal(c.admin.socket, join(dir, 'relay-admin.sock'), 'relative to the file, not the cwd');
  assert.equal(c.admin.tcp, null);
  assert.equal(c.portsRange, null);
  assert.equal(c.dataSourceCheck, true);
  assert.deepEqual(c.hooks, []);
  assert.equal(c.authorize, null);
  assert.equal(c.metrics, null);
  assert.equal(c.dashboard, null, 'no dashboard unless asked for');
  assert.deepEqual(c.log, { level: 'info' });
  assert.deepEqual(c.watch, { polling: false, debounceMs: 200 });
  assert.deepEqual({ ...c.limits }, { ...DEFAULT_LIMITS });
  assert.equal(c.grays.length, 1);
  const g = c.grays[0]!;
  assert.equal(g.id, 'office-nas');
  assert.equal(g.services[0]!.publicPort, 20000);
  assert.equal(g.dataPort, 20001);
  assert.ok(g.secret.equals(Buffer.from(S1, 'base64url')));
});

test('a loaded config is deeply frozen', async () => {
  const c = await parseWhiteConfig(MINIMAL_WHITE, null);
  assert.ok(Object.isFrozen(c));
  assert.ok(Object.isFrozen(c.control));
  assert.ok(Object.isFrozen(c.grays));
  assert.ok(Object.isFrozen(c.grays[0]));
  assert.ok(Object.isFrozen(c.limits));
  assert.throws(() => {
    (c.grays as unknown as GrayLike[]).push({ id: 'x' });
  }, TypeError);
});
type GrayLike = { id: string };

test('secrets print as [redacted] in JSON and inspect output', async () => {
  const c = await parseWhiteConfig(MINIMAL_WHITE, null);
  const json = JSON.stringify(c);
  assert.ok(!json.includes(S1));
  assert.match(json, /"secret":"\[redacted\]"/);
  const { inspect } = await import('node:util');
  assert.match(inspect(c, { depth: 5 }), /secret 32 bytes \[redacted\]/);
});

test('every white key is read and normalized', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'hook.key'), `${S2}\n`, { mode: 0o600 });
  const file = await writeConfig(
    dir,
    'white.yaml',
    `control: { listen: "[::]:7000" }
bind: "::"
admin:
  socket: null
  tcp: { listen: "[::1]:7001", token: "${'t'.repeat(32)}" }
ports: { range: "20000-20999" }
data_source_check: false
log: { level: debug }
watch: { polling: true, debounce_ms: 50 }
metrics: { listen: "127.0.0.1:9100" }
dashboard: { listen: "0.0.0.0:7400", token: "${'d'.repeat(32)}" }
hooks:
  - url: "https://example.com/hook"
    events: ["gray.connected"]
    secret_file: hook.key
  - url: "http://127.0.0.1:9000/"
    timeout_ms: 250
authorize:
  url: "http://127.0.0.1:8088/authorize"
  on_timeout: allow
  client_connect: true
limits: { client_wait_ms: 1234, hook_timeout_ms: 777 }
grays: []
`,
  );
  const c = await loadWhiteConfig(file);
  assert.deepEqual(c.control, { host: '::', port: 7000 });
  assert.equal(c.bind, '::');
  assert.equal(c.admin.socket, null);
  assert.deepEqual(c.admin.tcp, { host: '::1', port: 7001, token: 't'.repeat(32) });
  assert.deepEqual(c.portsRange, { from: 20000, to: 20999 });
  assert.equal(c.dataSourceCheck, false);
  assert.equal(c.log.level, 'debug');
  assert.deepEqual(c.watch, { polling: true, debounceMs: 50 });
  assert.deepEqual(c.metrics, { host: '127.0.0.1', port: 9100 });
  assert.deepEqual(c.dashboard, { host: '0.0.0.0', port: 7400, token: 'd'.repeat(32) });
  assert.equal(c.hooks.length, 2);
  assert.deepEqual(c.hooks[0]!.events, ['gray.connected']);
  assert.ok(c.hooks[0]!.secret!.equals(Buffer.from(S2, 'base64url')), 'secret_file is read and trimmed');
  assert.equal(c.hooks[0]!.timeoutMs, 777, 'hook timeout defaults to limits.hook_timeout_ms');
  assert.deepEqual(c.hooks[1]!.events, []);
  assert.equal(c.hooks[1]!.secret, null);
  assert.equal(c.hooks[1]!.timeoutMs, 250);
  assert.deepEqual(c.authorize, {
    url: 'http://127.0.0.1:8088/authorize',
    secret: null,
    timeoutMs: 1000,
    onTimeout: 'allow',
    grayLogin: true,
    clientConnect: true,
  });
  assert.equal(c.limits.clientWaitMs, 1234);
  assert.equal(c.limits.poolMax, DEFAULT_LIMITS.poolMax);
  assert.deepEqual(c.grays, []);
});

test('`grays:` with nothing after it means no grays', async () => {
  const c = await parseWhiteConfig('control: { listen: "0.0.0.0:7000" }\ngrays:\n', null);
  assert.deepEqual(c.grays, []);
});

test('a gray config loads with defaults; without data_host each session dials its own white', async (t) => {
  const dir = await tempDir(t);
  const file = await writeConfig(dir, 'gray.yaml', `white: "white.example.com:7000"\nid: office-nas\nsecret: "${S1}"\ntarget: "127.0.0.1:8080"\n`);
  const c = await loadGrayConfig(file);
  assert.deepEqual(c.whites, [{ host: 'white.example.com', port: 7000 }]);
  assert.equal(c.dataHost, null);
  assert.equal(c.resolveIntervalMs, 30_000);
  assert.equal(c.id, 'office-nas');
  assert.deepEqual(c.services[0]!.target, { host: '127.0.0.1', port: 8080 });
  assert.equal(c.pool, 8);
  assert.equal(c.services[0]!.proxyProtocol, 'none');
  assert.equal(c.services[0]!.name, 'default');
  assert.equal(c.log.level, 'info');
  assert.equal(c.limits.reconnectMaxMs, DEFAULT_LIMITS.reconnectMaxMs);

  const v6 = await parseGrayConfig(
    `white: "[2001:db8::1]:7000"\ndata_host: "[2001:db8::2]"\nid: a\nsecret: "${S1}"\ntarget: "[::1]:80"\npool: 1024\nproxy_protocol: v2\nlimits: { reconnect_max_ms: 1000 }\n`,
    null,
  );
  assert.deepEqual(v6.whites, [{ host: '2001:db8::1', port: 7000 }]);
  assert.equal(v6.dataHost, '2001:db8::2');
  assert.deepEqual(v6.services[0]!.target, { host: '::1', port: 80 });
  assert.equal(v6.pool, 1024);
  assert.equal(v6.services[0]!.proxyProtocol, 'v2');
  assert.equal(v6.limits.reconnectMaxMs, 1000);
});

test('white takes a list of addresses; data_host is refused with a list; resolve_interval_ms is checked', async () => {
  const c = await parseGrayConfig(`white: ["10.0.0.1:7000", "whites.example.com:7000", "[2001:db8::1]:7001"]\nid: a\nsecret: "${S1}"\ntarget: "127.0.0.1:80"\nresolve_interval_ms: 5000\n`, null);
  assert.deepEqual(c.whites, [
    { host: '10.0.0.1', port: 7000 },
    { host: 'whites.example.com', port: 7000 },
    { host: '2001:db8::1', port: 7001 },
  ]);
  assert.equal(c.dataHost, null);
  assert.equal(c.resolveIntervalMs, 5000);
  const err = await loadError(
    parseGrayConfig(`white: ["w1:7000", "w1:7000", "w2"]\ndata_host: "d"\nid: a\nsecret: "${S1}"\ntarget: "127.0.0.1:80"\nresolve_interval_ms: 10\n`, 'g.yaml'),
  );
  assert.deepEqual(errorsOf(err), [
    'g.yaml: white: items 0 and 1 are the same ("w1:7000")',
    'g.yaml: white[2]: "w2" is not a host:port address like "white.example.com:7000" or "[2001:db8::1]:7000"',
    'g.yaml: data_host: "d" is given with a list of whites; data_host is only for a single white (each session opens its data connections to the white it reached)',
    'g.yaml: resolve_interval_ms: 10 is below the minimum 1000',
  ]);
  const empty = await loadError(parseGrayConfig(`white: []\nid: a\nsecret: "${S1}"\ntarget: "127.0.0.1:80"\n`, 'g.yaml'));
  assert.deepEqual(errorsOf(empty), ['g.yaml: white: has 0 items, at least 1 required']);
});

test('command-line overrides replace the per-host keys of a white file; a bad one is named by its flag', async () => {
  const text = `control: { listen: "0.0.0.0:7000" }\nbind: "0.0.0.0"\nmetrics: { listen: "127.0.0.1:9100" }\ngrays:\n  - { id: a, secret: "${S1}", public_port: 7100, data_port: 7101 }\n`;
  const c = await parseWhiteConfig(text, null, {
    overrides: { bind: '10.0.0.2', controlListen: '10.0.0.2:7000', adminSocket: '/run/relay/w2.sock', metricsListen: '10.0.0.2:9100' },
  });
  assert.equal(c.bind, '10.0.0.2');
  assert.deepEqual(c.control, { host: '10.0.0.2', port: 7000 });
  assert.equal(c.admin.socket, '/run/relay/w2.sock');
  assert.deepEqual(c.metrics, { host: '10.0.0.2', port: 9100 });
  // A file without admin or metrics sections gets them from the flags.
  const bare = await parseWhiteConfig('control: { listen: "0.0.0.0:7000" }\n', null, { overrides: { metricsListen: '127.0.0.1:9200' } });
  assert.deepEqual(bare.metrics, { host: '127.0.0.1', port: 9200 });
  const err = await loadError(parseWhiteConfig(text, 'w.yaml', { overrides: { controlListen: '0.0.0.0:7100' } }));
  assert.ok(
    errorsOf(err).some((line) => line.includes('set by --control-listen') && line.includes('7100')),
    errorsOf(err).join('\n'),
  );
});

// Each case: a white config and the exact lines expected (file label "w.yaml").
const INVALID_WHITE: Array<{ name: string; yaml: string; errors: string[]; code?: string }> = [
  {
    name: 'unknown key in a gray',
    yaml: `control: { listen: "0.0.0.0:7000" }
grays:
  - { id: a, secret: "${S1}", public_port: 20000, data_port: 20001 }
  - { id: b, secret: "${S2}", public_port: 20002, data_port: 20003, colour: red }
`,
    errors: ['w.yaml: grays[1].colour: unknown key'],
  },
  {
    name: 'unknown top-level key',
    yaml: 'control: { listen: "0.0.0.0:7000" }\nlisten: 1\n',
    errors: ['w.yaml: listen: unknown key'],
  },
  {
    name: 'missing control',
    yaml: 'grays: []\n',
    errors: ['w.yaml: control: required key is missing'],
  },
  {
    name: 'port out of range and wrong type',
    yaml: `control: { listen: "0.0.0.0:7000" }
grays:
  - { id: a, secret: "${S1}", public_port: 70000, data_port: "20001" }
`,
    errors: ['w.yaml: grays[0].public_port: 70000 is above the maximum 65535', 'w.yaml: grays[0].data_port: "20001" is not an integer'],
  },
  {
    name: 'bad id',
    yaml: `control: { listen: "0.0.0.0:7000" }
grays:
  - { id: "office nas", secret: "${S1}", public_port: 20000, data_port: 20001 }
`,
    errors: ['w.yaml: grays[0].id: "office nas" is not 1 to 64 characters of A-Z a-z 0-9 . _ -'],
  },
  {
    name: 'no secret / two secrets',
    yaml: `control: { listen: "0.0.0.0:7000" }
grays:
  - { id: a, public_port: 20000, data_port: 20001 }
  - { id: b, secret: "${S1}", secret_env: X, public_port: 20002, data_port: 20003 }
`,
    errors: [
      'w.yaml: grays[0]: exactly one of secret, secret_file, secret_env is required, found none',
      'w.yaml: grays[1]: exactly one of secret, secret_file, secret_env may be given, found secret and secret_env',
    ],
  },
  {
    name: 'duplicate ids',
    yaml: `control: { listen: "0.0.0.0:7000" }
grays:
  - { id: a, secret: "${S1}", public_port: 20000, data_port: 20001 }
  - { id: a, secret: "${S2}", public_port: 20002, data_port: 20003 }
`,
    errors: ['w.yaml: grays[1].id: "a" is already the id of grays[0]'],
    code: ErrorCodes.CONFIG_CONFLICT,
  },
  {
    name: 'bad addresses',
    yaml: `control: { listen: "::1:7000" }
bind: "300.1.1.1"
metrics: { listen: "localhost" }
`,
    errors: [
      'w.yaml: control.listen: "::1:7000" is not a host:port address like "0.0.0.0:7000" or "[::]:7000"',
      'w.yaml: bind: "300.1.1.1" is not a valid IPv4 address',
      'w.yaml: metrics.listen: "localhost" is not a host:port address like "0.0.0.0:7000" or "[::]:7000"',
    ],
  },
  {
    name: 'control port 0 and a wrong IPv6 literal',
    yaml: 'control: { listen: "[fe80::zz]:7000" }\nmetrics: { listen: "127.0.0.1:0" }\n',
    errors: [
      'w.yaml: control.listen: "[fe80::zz]:7000" is not a host:port address like "0.0.0.0:7000" or "[::]:7000"',
      'w.yaml: metrics.listen: "127.0.0.1:0" port 0 is outside 1..65535',
    ],
  },
  {
    name: 'admin tcp not on loopback, short token',
    yaml: `control: { listen: "0.0.0.0:7000" }
admin: { tcp: { listen: "0.0.0.0:7001", token: "short" } }
`,
    errors: [
      'w.yaml: admin.tcp.listen: "0.0.0.0:7001" is not a loopback address; the admin TCP listener may only use 127.0.0.1, ::1 or localhost',
      'w.yaml: admin.tcp.token: the value is 5 characters long, at least 32 required',
    ],
  },
  {
    name: 'dashboard off loopback without a token, short token',
    yaml: `control: { listen: "0.0.0.0:7000" }
dashboard: { listen: "0.0.0.0:7400" }
metrics: { listen: "127.0.0.1:9100" }
authorize: { url: "http://127.0.0.1:8088/", secret: "${S1}" }
grays: []
`,
    errors: ['w.yaml: dashboard.listen: "0.0.0.0:7400" is not a loopback address; a dashboard reachable from other machines requires dashboard.token'],
  },
  {
    name: 'dashboard token too short, unknown dashboard key',
    yaml: `control: { listen: "0.0.0.0:7000" }
dashboard: { listen: "[::1]:7400", token: "short", open: true }
`,
    errors: ['w.yaml: dashboard.token: the value is 5 characters long, at least 32 required', 'w.yaml: dashboard.open: unknown key'],
  },
  {
    name: 'bad ports.range',
    yaml: 'control: { listen: "0.0.0.0:7000" }\nports: { range: "30000-20000" }\n',
    errors: ['w.yaml: ports.range: "30000-20000": starts above its end'],
  },
  {
    name: 'hooks: unknown event, bad URL, two secrets',
    yaml: `control: { listen: "0.0.0.0:7000" }
hooks:
  - url: "ftp://example.com/"
    events: ["gray.connected", "gray.exploded"]
    secret: "${S1}"
    secret_env: HOOK
`,
    errors: [
      'w.yaml: hooks[0]: at most one of secret, secret_file, secret_env may be given, found secret and secret_env',
      'w.yaml: hooks[0].url: "ftp://example.com/" is not an http:// or https:// URL',
      'w.yaml: hooks[0].events[1]: "gray.exploded" is not one of "gray.connected", "gray.disconnected", "gray.auth_failed", "client.connected", "client.disconnected", "config.reloaded", "config.rejected"',
    ],
  },
  {
    name: 'authorize: bad enum and type',
    yaml: `control: { listen: "0.0.0.0:7000" }
authorize: { url: "http://127.0.0.1/", on_timeout: maybe, gray_login: "yes" }
`,
    errors: [
      'w.yaml: authorize.on_timeout: "maybe" is not one of "allow", "deny"',
      'w.yaml: authorize.gray_login: "yes" is not true or false',
    ],
  },
  {
    name: 'limits: unknown, zero, inverted pair',
    yaml: `control: { listen: "0.0.0.0:7000" }
limits:
  client_wait: 5
  client_wait_ms: 0
  reconnect_base_ms: 60000
`,
    errors: [
      'w.yaml: limits.client_wait: unknown key',
      'w.yaml: limits.client_wait_ms: 0 is below the minimum 1',
      'w.yaml: limits.reconnect_base_ms: 60000 is above reconnect_max_ms (30000); it must not be',
    ],
  },
  {
    name: 'engine.threads outside 1 to 16',
    yaml: 'control: { listen: "0.0.0.0:7000" }\nengine: { threads: 17 }\n',
    errors: ['w.yaml: engine.threads: 17 is above the maximum 16'],
  },
  {
    name: 'engine.threads zero',
    yaml: 'control: { listen: "0.0.0.0:7000" }\nengine: { threads: 0 }\n',
    errors: ['w.yaml: engine.threads: 0 is below the minimum 1'],
  },
  {
    name: 'the top level is a list',
    yaml: '- a\n- b\n',
    errors: ['w.yaml: the file must be a YAML mapping of keys to values, found a list'],
  },
  {
    name: 'an empty file',
    yaml: '# nothing here\n',
    errors: ['w.yaml: the file must be a YAML mapping of keys to values, found nothing'],
  },
];

for (const c of INVALID_WHITE) {
  test(`invalid white config: ${c.name}`, async (t) => {
    const dir = await tempDir(t);
    const file = await writeConfig(dir, 'w.yaml', c.yaml);
    // Labels are the path as given; run from the folder so the label is just "w.yaml".
    const err = await loadError(parseWhiteConfig(await readFile(file, 'utf8'), 'w.yaml'));
    assert.deepEqual(errorsOf(err), c.errors);
    assert.equal(err.message, c.errors.join('\n'));
    assert.equal(err.code, c.code ?? ErrorCodes.CONFIG_INVALID);
  });
}

test('invalid gray configs name the path, the value and the rule', async () => {
  const err = await loadError(
    parseGrayConfig(`white: "white.example.com"\nid: a\nsecret_file: ""\ntarget: "127.0.0.1:8080"\npool: 0\nproxy_protocol: v3\ncolour: 1\n`, 'g.yaml'),
  );
  assert.deepEqual(errorsOf(err), [
    'g.yaml: white: "white.example.com" is not a host:port address like "white.example.com:7000" or "[2001:db8::1]:7000", or a list of them (the gray keeps a session with every white; a host name resolving to several addresses means one session per address)',
    'g.yaml: secret_file: "" is 0 characters long, at least 1 required',
    'g.yaml: pool: 0 is below the minimum 1',
    'g.yaml: proxy_protocol: "v3" is not one of "none", "v1", "v2"',
    'g.yaml: colour: unknown key',
  ]);
  const missing = await loadError(parseGrayConfig('white: "w:1"\n', 'g.yaml'));
  assert.deepEqual(errorsOf(missing), [
    'g.yaml: exactly one of secret, secret_file, secret_env is required, found none',
    'g.yaml: id: required key is missing',
    'g.yaml: target: required key is missing (or give services, a mapping of name: { target })',
  ]);
});

test('all errors are reported at once, in file order, across schema and semantic checks', async () => {
  const text = `control: { listen: "0.0.0.0:7000" }
admin: { tcp: { listen: "0.0.0.0:7001", token: "${'x'.repeat(40)}" } }
grays:
  - { id: a, secret: "${S1}", public_port: 20000, data_port: 20001 }
  - { id: b, secret: "AAAAAAAAAAA", public_port: 20002, data_port: 20003 }
  - { id: c, secret: "${S2}", public_port: 20001, data_port: 20004, colour: red }
  - { id: a, secret_env: RELAY_TEST_SURELY_UNSET_VAR, public_port: 7000, data_port: 65536 }
limits: { poll_max: 3 }
`;
  const err = await loadError(parseWhiteConfig(text, 'white.yaml'));
  assert.equal(err.code, ErrorCodes.CONFIG_INVALID, 'mixed kinds give the general code');
  assert.deepEqual(errorsOf(err), [
    'white.yaml: admin.tcp.listen: "0.0.0.0:7001" is not a loopback address; the admin TCP listener may only use 127.0.0.1, ::1 or localhost',
    'white.yaml: grays[1].secret: decodes to 8 bytes, at least 16 (128 bits) required',
    'white.yaml: grays[2].public_port: 20001 is already the data_port of grays[0]',
    'white.yaml: grays[2].colour: unknown key',
    'white.yaml: grays[3].id: "a" is already the id of grays[0]',
    'white.yaml: grays[3].secret_env: environment variable RELAY_TEST_SURELY_UNSET_VAR is not set',
    'white.yaml: grays[3].public_port: 7000 is already the control port (control.listen)',
    'white.yaml: grays[3].data_port: 65536 is above the maximum 65535',
    'white.yaml: limits.poll_max: unknown key',
  ]);
  const issues = err.details.issues as Array<{ line?: number }>;
  assert.equal(issues[1]!.line, 5, 'details carry the line number');
});

test('dashboard: {} serves on 127.0.0.1:7400 without a token; loopback needs none', async () => {
  const c = await parseWhiteConfig('control: { listen: "0.0.0.0:7000" }\ndashboard: {}\n', null);
  assert.deepEqual(c.dashboard, { host: '127.0.0.1', port: 7400, token: null });
  const v6 = await parseWhiteConfig('control: { listen: "0.0.0.0:7000" }\ndashboard: { listen: "[::1]:7500" }\n', null);
  assert.deepEqual(v6.dashboard, { host: '::1', port: 7500, token: null });
  const off = await parseWhiteConfig('control: { listen: "0.0.0.0:7000" }\ndashboard: null\n', null);
  assert.equal(off.dashboard, null);
});

test('the dashboard port clashes like any other', async () => {
  const err = await loadError(
    parseWhiteConfig(`control: { listen: "0.0.0.0:7000" }\ndashboard: { listen: "127.0.0.1:7000" }\ngrays:\n  - { id: a, secret: "${S1}", public_port: 7400, data_port: 20001 }\n`, 'white.yaml'),
  );
  assert.equal(err.code, ErrorCodes.CONFIG_CONFLICT);
  assert.deepEqual(errorsOf(err), ['white.yaml: dashboard.listen: 7000 is already the control port (control.listen)']);
  const second = await loadError(
    parseWhiteConfig(`control: { listen: "0.0.0.0:7000" }\ndashboard: {}\ngrays:\n  - { id: a, secret: "${S1}", public_port: 7400, data_port: 20001 }\n`, 'white.yaml'),
  );
  assert.deepEqual(errorsOf(second), ['white.yaml: grays[0].public_port: 7400 is already the dashboard port (dashboard.listen)']);
});

test('port clashes of every kind are reported', async () => {
  const text = `control: { listen: "0.0.0.0:7000" }
admin: { tcp: { listen: "127.0.0.1:7001", token: "${'x'.repeat(40)}" } }
metrics: { listen: "127.0.0.1:7001" }
grays:
  - { id: a, secret: "${S1}", public_port: 20000, data_port: 20000 }
  - { id: b, secret: "${S1}", public_port: 20000, data_port: 20003 }
  - { id: c, secret: "${S1}", public_port: 20004, data_port: 20003 }
  - { id: d, secret: "${S1}", public_port: 7001, data_port: 9100 }
`;
  const err = await loadError(parseWhiteConfig(text, 'white.yaml'));
  assert.equal(err.code, ErrorCodes.CONFIG_CONFLICT);
  assert.deepEqual(errorsOf(err), [
    'white.yaml: metrics.listen: 7001 is already the admin TCP port (admin.tcp.listen)',
    'white.yaml: grays[0].data_port: 20000 is already the public_port of grays[0]',
    'white.yaml: grays[1].public_port: 20000 is already the public_port of grays[0]',
    'white.yaml: grays[2].data_port: 20003 is already the data_port of grays[1]',
    'white.yaml: grays[3].public_port: 7001 is already the admin TCP port (admin.tcp.listen)',
  ]);
});

test('duplicate YAML keys are a parse error naming the key and both lines', async () => {
  const text = `control: { listen: "0.0.0.0:7000" }
grays:
  - id: a
    secret: "${S1}"
    public_port: 20000
    data_port: 20001
    secret: "${S2}"
bind: "0.0.0.0"
bind: "127.0.0.1"
`;
  const err = await loadError(parseWhiteConfig(text, 'white.yaml'));
  assert.equal(err.code, ErrorCodes.CONFIG_PARSE);
  assert.deepEqual(errorsOf(err), [
    'white.yaml: grays[0].secret: duplicate key on line 7, first given on line 4',
    'white.yaml: bind: duplicate key on line 9, first given on line 8',
  ]);
});

test('YAML syntax errors give the line and column; secrets are not echoed', async () => {
  const err = await loadError(parseWhiteConfig(`control: { listen: "0.0.0.0:7000"\nsecret: "${S1}"\n`, 'white.yaml'));
  assert.equal(err.code, ErrorCodes.CONFIG_PARSE);
  for (const line of errorsOf(err)) assert.match(line, /^white\.yaml: line \d+, column \d+: /);
  assert.ok(!err.message.includes(S1));
  const multi = await loadError(parseWhiteConfig('a: 1\n---\nb: 2\n', 'white.yaml'));
  assert.match(errorsOf(multi)[0]!, /^white\.yaml: line 2, column 1: Source contains multiple documents/);
});

test('a missing file is CONFIG_READ naming the file', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'nope.yaml');
  const err = await loadError(loadWhiteConfig(file));
  assert.equal(err.code, ErrorCodes.CONFIG_READ);
  assert.equal(err.message, `${file}: does not exist`);
});

test('verifyConfigFile detects the kind and reports instead of throwing', async (t) => {
  const dir = await tempDir(t);
  const white = await writeConfig(dir, 'w.yaml', MINIMAL_WHITE);
  const gray = await writeConfig(dir, 'g.yaml', `white: "w:7000"\nid: a\nsecret: "${S1}"\ntarget: "127.0.0.1:80"\n`);
  const bad = await writeConfig(dir, 'b.yaml', 'grays: []\n');
  const broken = await writeConfig(dir, 'x.yaml', 'a: [\n');
  assert.deepEqual(await verifyConfigFile(white), { ok: true, kind: 'white' });
  assert.deepEqual(await verifyConfigFile(gray), { ok: true, kind: 'gray' });
  assert.deepEqual(await verifyConfigFile(bad), { ok: false, kind: 'white', errors: [`${bad}: control: required key is missing`] });
  const b = await verifyConfigFile(broken);
  assert.equal(b.ok, false);
  const r = await verifyConfigFile(join(dir, 'missing.yaml'));
  assert.deepEqual(r, { ok: false, errors: [`${join(dir, 'missing.yaml')}: does not exist`] });
});

test('the examples load as shipped, with no environment and no other file (every key shown)', async () => {
  const white = await loadWhiteConfig(join(REPO, 'examples/white.yaml'), { env: {} });
  assert.deepEqual(
    white.grays.map((g) => g.id),
    ['office-nas', 'lab-camera'],
  );
  assert.ok(white.authorize !== null && white.metrics !== null && white.admin.tcp !== null && white.portsRange !== null && white.hooks.length === 1 && white.dashboard !== null);
  const gray = await loadGrayConfig(join(REPO, 'examples/gray.yaml'), { env: {} });
  assert.equal(gray.id, 'office-nas');
  assert.ok(gray.secret.equals(white.grays[0]!.secret), 'the two examples belong together');

  // "Every key shown": each property of the schemas appears in the example.
  const text = await readFile(join(REPO, 'examples/white.yaml'), 'utf8');
  for (const key of schemaKeys(whiteSchema())) {
    if (key === 'secret' || key === 'secret_file' || key === 'secret_env') continue;
    assert.match(text, new RegExp(`\\b${key}:`), `examples/white.yaml shows ${key}`);
  }
  const grayText = await readFile(join(REPO, 'examples/gray.yaml'), 'utf8');
  for (const key of schemaKeys(graySchema())) {
    if (key === 'secret' || key === 'secret_file' || key === 'secret_env') continue;
    assert.match(grayText, new RegExp(`\\b${key}:`), `examples/gray.yaml shows ${key}`);
  }
  for (const key of ['secret:', 'secret_file:', 'secret_env:']) assert.ok(text.includes(key));
});

/** Property names of a schema, except the limits (too many to show; any subset is fine). */
function schemaKeys(schema: Record<string, unknown>): string[] {
  const keys = new Set<string>();
  const visit = (node: unknown, inLimits: boolean): void => {
    if (typeof node !== 'object' || node === null) return;
    const o = node as Record<string, unknown>;
    if (o.properties && typeof o.properties === 'object' && !inLimits) for (const k of Object.keys(o.properties)) keys.add(k);
    for (const [k, v] of Object.entries(o)) visit(v, inLimits || k === 'limits');
  };
  visit(schema, false);
  return [...keys];
}

test('schema files in schema/ match the parts generated from code', async () => {
  const white = JSON.parse(await readFile(join(REPO, 'schema/white.schema.json'), 'utf8')) as unknown;
  const gray = JSON.parse(await readFile(join(REPO, 'schema/gray.schema.json'), 'utf8')) as unknown;
  const hint = 'run: npx tsc -p . && node dist/src/config/schema.js --write';
  assert.deepEqual(white, whiteSchema(), hint);
  assert.deepEqual(gray, graySchema(), hint);
});

test('every limit has a snake_case key that maps back to its name, and can be overridden', async () => {
  const overrides = Object.keys(DEFAULT_LIMITS).map((name, i) => `  ${snakeCase(name)}: ${100000 + i}`);
  for (const name of Object.keys(DEFAULT_LIMITS)) assert.equal(camelCase(snakeCase(name)), name);
  const c = await parseGrayConfig(`white: "w:7000"\nid: a\nsecret: "${S1}"\ntarget: "t:1"\nlimits:\n${overrides.join('\n')}\n`, null);
  Object.keys(DEFAULT_LIMITS).forEach((name, i) => assert.equal(c.limits[name as keyof typeof DEFAULT_LIMITS], 100000 + i, name));
});

test('relative paths resolve against the config file folder, not the cwd', async (t) => {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'sub'));
  await writeFile(join(dir, 'sub/g.key'), S1, { mode: 0o600 });
  await chmod(join(dir, 'sub/g.key'), 0o600);
  const file = await writeConfig(
    dir,
    'white.yaml',
    `control: { listen: "0.0.0.0:7000" }\nadmin: { socket: "sub/admin.sock" }\ngrays:\n  - { id: a, secret_file: "sub/g.key", public_port: 20000, data_port: 20001 }\n`,
  );
  const c = await loadWhiteConfig(file);
  assert.equal(c.admin.socket, join(dir, 'sub/admin.sock'));
  assert.ok(c.grays[0]!.secret.equals(Buffer.from(S1, 'base64url')));
});

test('a Unix socket path too long for sun_path is refused before listen() would be', async () => {
  const long = `/${'d'.repeat(120)}/admin.sock`;
  const err = await loadError(parseWhiteConfig(`control: { listen: "0.0.0.0:7000" }\nadmin: { socket: "${long}" }\n`, 'w.yaml'));
  assert.match(errorsOf(err)[0]!, /^w\.yaml: admin\.socket: \/d+\/admin\.sock is \d+ bytes long, a Unix socket path may have at most 10[37]; use a shorter path$/);
});

test('docs/config.md lists every limit with its default', async () => {
  const doc = await readFile(join(REPO, 'docs/config.md'), 'utf8');
  for (const [name, value] of Object.entries(DEFAULT_LIMITS)) {
    assert.ok(doc.includes(`| \`${snakeCase(name)}\` | ${value} |`), `docs/config.md lists ${snakeCase(name)} with ${value}`);
  }
});
