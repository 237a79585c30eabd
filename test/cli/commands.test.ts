// The shared add/delete/show code without processes: rendering, where the admin API is found, and
// what add writes into gray.yaml.
import { newGrayStats } from '../../src/engine/stats.js';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AdminState } from '../../src/admin/server.js';
import type { ServiceSnapshot } from '../../src/engine/stats.js';
import { addCommand, adminTargetFor, deleteCommand, formatBytes, formatDuration, renderShow, serviceCommand } from '../../src/cli/commands.js';
import { parseGrayConfig, parseWhiteConfig } from '../../src/config/load.js';
import { ErrorCodes, isRelayError } from '../../src/errors.js';

const NOW = Date.UTC(2025, 0, 31, 12, 0, 0);

function state(overrides: Partial<AdminState> = {}): AdminState {
  return {
    version: '9.9.9',
    configPath: '/etc/relay/white.yaml',
    startedAt: NOW - 3 * 3600_000 - 5 * 60_000,
    grays: [
      { ...newGrayStats(), id: 'zeta', publicPort: 20002, dataPort: 20003, connected: false, portsBound: true, lastError: 'heartbeat timeout\nafter 3 missed' },
      {
        ...newGrayStats(),
        id: 'alpha',
        publicPort: 20000,
        dataPort: 20001,
        connected: true,
        connectedSince: NOW - 65_000,
        remoteAddress: '203.0.113.9',
        poolIdle: 7,
        poolTarget: 8,
        activeClients: 2,
        pendingClients: 1,
        idleTimeouts: 0, clientsTotal: 40,
        bytesFromClients: 1536,
        bytesToClients: 3 * 1024 * 1024,
        lastError: null,
        portsBound: true,
        listenError: null,
        bindFailures: 0,
      },
    ],
    counters: {
      authFailures: 4,
      dataRejections: {},
      controlRejections: {},
      reloads: { ok: 2, rejected: 1 },
      lastReload: { at: NOW - 10_000, ok: false, error: 'white.yaml: grays[1].public_port: 20000 is already taken\nwhite.yaml: grays[1].id: duplicate' },
    },
    hooks: [{ url: 'https://hooks.example/relay', delivered: 5, failed: 1, dropped: 0, queued: 2, lastError: 'HTTP 500' }],
    ...overrides,
  };
}

describe('show rendering', () => {
  it('formats bytes and durations in human units', () => {
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatBytes(1023), '1023 B');
    assert.equal(formatBytes(1024), '1.0 KiB');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(200 * 1024), '200 KiB');
    assert.equal(formatBytes(5 * 1024 ** 3), '5.0 GiB');
    assert.equal(formatDuration(59_999), '59s');
    assert.equal(formatDuration(65_000), '1m 5s');
    assert.equal(formatDuration(3 * 3600_000 + 5 * 60_000), '3h 5m');
    assert.equal(formatDuration(50 * 3600_000), '2d 2h');
  });

  it('renders one row per gray (sorted), then the config, reload and hook facts', () => {
    const text = renderShow(state(), NOW);
    const lines = text.split('\n');
    assert.match(lines[0]!, /^GRAY\s+PUBLIC\/DATA\s+STATUS\s+REMOTE\s+POOL IDLE\/TARGET\s+CLIENTS\s+IN \/ OUT\s+LAST ERROR$/);
    assert.match(lines[1]!, /^alpha\s+20000\/20001\s+connected since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(1m 5s ago\)\s+203\.0\.113\.9\s+7\/8\s+2 active, 1 pending\s+1\.5 KiB \/ 3\.0 MiB\s+-$/);
    assert.match(lines[2]!, /^zeta\s+20002\/20003\s+offline\s+-\s+0\/0\s+0 active, 0 pending\s+0 B \/ 0 B\s+heartbeat timeout \| after 3 missed$/);
    // columns line up: every row's STATUS starts where the header's does
    const col = lines[0]!.indexOf('STATUS');
    assert.equal(lines[1]!.indexOf('connected'), col);
    assert.equal(lines[2]!.indexOf('offline'), col);
    assert.match(text, /^config\s+\/etc\/relay\/white\.yaml$/m);
    assert.match(text, /^last reload\s+.*\(10s ago\): FAILED, the previous config stays$/m);
    assert.match(text, /^\s+white\.yaml: grays\[1\]\.public_port: 20000 is already taken$/m);
    assert.match(text, /^\s+white\.yaml: grays\[1\]\.id: duplicate$/m);
    assert.match(text, /^reloads\s+2 applied, 1 rejected$/m);
    assert.match(text, /^hooks\s+https:\/\/hooks\.example\/relay: 5 delivered, 1 failed, 0 dropped, 2 queued; last error: HTTP 500$/m);
    assert.match(text, /^white\s+version 9\.9\.9, up 3h 5m, 4 failed gray logins$/m);
    for (const line of lines) assert.equal(line, line.trimEnd(), 'no trailing spaces');
  });

  it('shows a gray whose ports are not bound with the OS error, and a reload applied but not all of it', () => {
    const text = renderShow(
      state({
        grays: [{ ...newGrayStats(), id: 'held', publicPort: 39000, dataPort: 39001, connected: false, portsBound: false, listenError: 'cannot listen on 0.0.0.0:39000 (public_port of held): listen EADDRINUSE', bindFailures: 3 }],
        counters: {
          authFailures: 0,
          dataRejections: {},
          controlRejections: {},
          reloads: { ok: 1, rejected: 0 },
          lastReload: { at: NOW - 1000, ok: true, error: null, notApplied: ['grays[held]: listen EADDRINUSE; retrying', 'metrics.listen: the metrics listener is bound at start; restart needed'] },
        },
      }),
      NOW,
    );
    assert.match(text, /^held +39000\/39001 +ports not bound, retrying .*listen EADDRINUSE$/m);
    assert.match(text, /^last reload +.*: applied, except:\n +grays\[held\]: listen EADDRINUSE; retrying\n +metrics\.listen: the metrics listener is bound at start; restart needed$/m);
    assert.doesNotMatch(text, /FAILED/);
  });

  it('lists the services of a gray with their ports, allow-lists, clients, bytes and refusals; a lone default service is not repeated', () => {
    const services: ServiceSnapshot[] = [
      { name: 'ssh', publicPort: 20022, allow: ['203.0.113.0/24', '2001:db8::/32'], activeClients: 2, clientsTotal: 7, bytesFromClients: 2048, bytesToClients: 10, clientsRefused: { RELAY_ERR_CLIENT_NOT_ALLOWED: 3 } },
      { name: 'web', publicPort: 20080, allow: [], activeClients: 0, clientsTotal: 1, bytesFromClients: 0, bytesToClients: 0, clientsRefused: {} },
    ];
    const text = renderShow(
      state({
        grays: [
          { ...newGrayStats(), id: 'nas', publicPort: 20022, dataPort: 20001, connected: false, services },
          { ...newGrayStats(), id: 'solo', publicPort: 20100, dataPort: 20101, connected: false, services: [{ name: 'default', publicPort: 20100, allow: [], activeClients: 0, clientsTotal: 0, bytesFromClients: 0, bytesToClients: 0, clientsRefused: {} }] },
        ],
      }),
      NOW,
    );
    assert.match(text, /^GRAY +SERVICE +PUBLIC +ALLOW +CLIENTS +IN \/ OUT +REFUSED$/m);
    assert.match(text, /^nas +ssh +20022 +203\.0\.113\.0\/24 2001:db8::\/32 +2 active, 7 total +2\.0 KiB \/ 10 B +3 CLIENT_NOT_ALLOWED$/m);
    assert.match(text, /^nas +web +20080 +anyone +0 active, 1 total +0 B \/ 0 B +-$/m);
    assert.doesNotMatch(text, /^solo +default/m);
  });

  it('says so when there are no grays, no reload yet and no hooks', () => {
    const text = renderShow(state({ grays: [], hooks: [], counters: { ...state().counters, lastReload: null } }), NOW);
    assert.match(text, /^no grays in the config$/m);
    assert.match(text, /^last reload\s+none since start$/m);
    assert.match(text, /^hooks\s+none$/m);
  });
});

describe('commands on a config file', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'relay-cmd-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('finds the admin socket from the file, relative to its folder, even when the file is invalid', async () => {
    const path = join(dir, 'a.yaml');
    await writeFile(path, 'control: { listen: "127.0.0.1:7000" }\ngrays: []\n');
    assert.deepEqual(await adminTargetFor(path), { socket: join(dir, 'relay-admin.sock') });
    // A port clash makes the file invalid; show must still find the white to report it.
    await writeFile(path, 'control: { listen: "127.0.0.1:7000" }\nadmin: { socket: "run/admin.sock" }\ngrays: [{ id: a, secret: x, public_port: 7000, data_port: 7000 }]\n');
    assert.deepEqual(await adminTargetFor(path), { socket: join(dir, 'run', 'admin.sock') });
    const token = 't'.repeat(32);
    await writeFile(path, `admin: { socket: null, tcp: { listen: "127.0.0.1:7001", token: "${token}" } }\n`);
    assert.deepEqual(await adminTargetFor(path), { url: 'http://127.0.0.1:7001', token });
    await writeFile(path, 'admin: { socket: null }\n');
    await assert.rejects(adminTargetFor(path), (err) => isRelayError(err, ErrorCodes.USAGE) && /--socket/.test(err.message));
    // A token the white would refuse to start with is refused here too, without connecting.
    await writeFile(path, 'admin: { socket: null, tcp: { listen: "127.0.0.1:7001", token: "t t t t t t t t t t t t t t t t t" } }\n');
    await assert.rejects(adminTargetFor(path), (err) => isRelayError(err, ErrorCodes.CONFIG_INVALID) && /has a space at position 2/.test(err.message));
  });

  it('prefers the Unix socket when both are configured; the TCP listener only when the default socket is not here', async () => {
    const sub = join(dir, 'both');
    await mkdir(sub, { recursive: true });
    const path = join(sub, 'white.yaml');
    const token = 'k'.repeat(40);
    await writeFile(path, `admin: { socket: "./s.sock", tcp: { listen: "127.0.0.1:7001", token: "${token}" } }\n`);
    assert.deepEqual(await adminTargetFor(path), { socket: join(sub, 's.sock') }, 'an explicit socket always wins');
    await writeFile(path, `admin: { tcp: { listen: "127.0.0.1:7001", token: "${token}" } }\n`);
    assert.deepEqual(await adminTargetFor(path), { url: 'http://127.0.0.1:7001', token }, 'no default socket file here: TCP');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(join(sub, 'relay-admin.sock'), resolve));
    try {
      assert.deepEqual(await adminTargetFor(path), { socket: join(sub, 'relay-admin.sock') }, 'the default socket exists: the socket');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('add warns when the white\'s file, which now holds the new secret, is readable by group or others', async () => {
    const path = join(dir, 'exposed.yaml');
    await writeFile(path, 'control: { listen: "127.0.0.1:7400" }\nports: { range: "21100-21110" }\ngrays: []\n');
    await chmod(path, 0o640);
    const out = await addCommand(path, { id: 'g1' });
    assert.deepEqual(out.warnings, [
      `${path} holds inline secrets (the secret of "g1") and its group can read it (mode 0640): chmod 600 ${path}, or move them to secret_file / secret_env`,
    ]);
    await chmod(path, 0o600);
    assert.deepEqual((await addCommand(path, { id: 'g2' })).warnings, []);
  });

  it('add writes a valid gray.yaml; a wildcard control address is replaced by the host name, with a warning', async () => {
    const path = join(dir, 'w.yaml');
    await writeFile(path, '# keep me\ncontrol: { listen: "0.0.0.0:7400" }\nports: { range: "21000-21010" }\ngrays: []\n', { mode: 0o600 });
    const out = await addCommand(path, { id: 'g1', target: '127.0.0.1:8080' });
    assert.deepEqual([out.entry.publicPort, out.entry.dataPort], [21000, 21001]);
    assert.equal(out.warnings.length, 1);
    assert.match(out.warnings[0]!, /--white/);
    const gray = await parseGrayConfig(out.grayYaml, null);
    assert.equal(gray.id, 'g1');
    assert.deepEqual(gray.whites, [{ host: hostname(), port: 7400 }]);
    assert.equal(gray.secret.toString('base64url'), out.entry.secret);
    assert.deepEqual(gray.services[0]!.target, { host: '127.0.0.1', port: 8080 });

    const explicit = await addCommand(path, { id: 'g2', white: 'white.example.com:7400' });
    assert.deepEqual(explicit.warnings, []);
    assert.match(explicit.grayYaml, /^white: "white\.example\.com:7400"/m);
    assert.match(await readFile(path, 'utf8'), /^# keep me$/m);

    const removed = await deleteCommand(path, 'g1');
    assert.match(removed.summary, /deleted gray "g1" \(public port 21000, data port 21001\)/);
  });

  it('add --service allocates a public port per service and prints a gray.yaml with the services; service add|delete edit an existing gray', async () => {
    const path = join(dir, 'svc.yaml');
    await writeFile(path, '# keep me\ncontrol: { listen: "127.0.0.1:7400" }\nports: { range: "21200-21220" }\ngrays: []\n', { mode: 0o600 });
    const out = await addCommand(path, { id: 'nas', services: [{ name: 'ssh', target: '127.0.0.1:22' }, { name: 'web', target: '127.0.0.1:8080' }] });
    assert.deepEqual(out.entry.services, [{ name: 'ssh', publicPort: 21200 }, { name: 'web', publicPort: 21201 }]);
    assert.equal(out.entry.dataPort, 21202);
    assert.match(out.summary, /public ports ssh 21200, web 21201, data port 21202/);
    const gray = await parseGrayConfig(out.grayYaml, null);
    assert.deepEqual(gray.services.map((x) => [x.name, x.target.port]), [['ssh', 22], ['web', 8080]]);
    let white = await parseWhiteConfig(await readFile(path, 'utf8'), path);
    assert.deepEqual(white.grays[0]!.services.map((x) => [x.name, x.publicPort]), [['ssh', 21200], ['web', 21201]]);

    const added = await serviceCommand(path, { values: { allow: ['203.0.113.0/24', '2001:db8::/32'] }, positionals: ['add', 'nas', 'db'] });
    assert.match(added, /added service "db" to gray "nas" .*: public port 21203, allow 203\.0\.113\.0\/24 2001:db8::\/32/);
    white = await parseWhiteConfig(await readFile(path, 'utf8'), path);
    assert.deepEqual(white.grays[0]!.services.map((x) => [x.name, x.publicPort, x.allow.map((a) => a.text)]), [['ssh', 21200, []], ['web', 21201, []], ['db', 21203, ['203.0.113.0/24', '2001:db8::/32']]]);
    assert.match(await readFile(path, 'utf8'), /^# keep me$/m);
    // An invalid network names the entry; nothing is written.
    const before = await readFile(path, 'utf8');
    await assert.rejects(serviceCommand(path, { values: { allow: ['10.0.0.1/8'] }, positionals: ['add', 'nas', 'bad'] }), (err) => isRelayError(err) && /allow\[0\]: "10\.0\.0\.1\/8" has bits set/.test(err.message));
    await assert.rejects(serviceCommand(path, { values: {}, positionals: ['add', 'nas', 'ssh'] }), (err) => isRelayError(err, ErrorCodes.CONFIG_CONFLICT));
    assert.equal(await readFile(path, 'utf8'), before);

    assert.match(await serviceCommand(path, { values: {}, positionals: ['delete', 'nas', 'web'] }), /deleted service "web" of gray "nas" \(public port 21201\)/);
    white = await parseWhiteConfig(await readFile(path, 'utf8'), path);
    assert.deepEqual(white.grays[0]!.services.map((x) => x.name), ['ssh', 'db']);

    // A gray in the single form becomes a list whose first service is "default".
    await addCommand(path, { id: 'solo', publicPort: 21210, dataPort: 21211 });
    await serviceCommand(path, { values: { 'public-port': '21212' }, positionals: ['add', 'solo', 'admin'] });
    white = await parseWhiteConfig(await readFile(path, 'utf8'), path);
    assert.deepEqual(white.grays[1]!.services.map((x) => [x.name, x.publicPort]), [['default', 21210], ['admin', 21212]]);
    await serviceCommand(path, { values: {}, positionals: ['delete', 'solo', 'admin'] });
    await assert.rejects(serviceCommand(path, { values: {}, positionals: ['delete', 'solo', 'default'] }), (err) => isRelayError(err, ErrorCodes.USAGE) && /last service/.test(err.message));
    await assert.rejects(serviceCommand(path, { values: {}, positionals: ['delete', 'ghost', 'x'] }), (err) => isRelayError(err, ErrorCodes.GRAY_UNKNOWN));
    await assert.rejects(addCommand(path, { id: 'both', target: '127.0.0.1:1', services: [{ name: 'a', target: '127.0.0.1:2' }] }), (err) => isRelayError(err, ErrorCodes.USAGE) && /--service/.test(err.message));
  });

  it('add checks --white and --target before touching the file', async () => {
    const path = join(dir, 'x.yaml');
    const text = 'control: { listen: "127.0.0.1:7400" }\nports: { range: "21000-21010" }\ngrays: []\n';
    await writeFile(path, text);
    await assert.rejects(addCommand(path, { id: 'g', white: 'no-port' }), (err) => isRelayError(err, ErrorCodes.USAGE) && /--white/.test(err.message));
    await assert.rejects(addCommand(path, { id: 'g', target: '[::1' }), (err) => isRelayError(err, ErrorCodes.USAGE) && /--target/.test(err.message));
    assert.equal(await readFile(path, 'utf8'), text);
  });
});
