// End to end: the registry lives in white.yaml and changes while the white runs. Real `relay white`,
// `relay gray` and `relayctl` processes on 127.0.0.1; every wait is for a log line, a process exit
// or bytes on a socket, never a fixed sleep.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AdminState } from '../../src/admin/server.js';
import { closedBy, roundTrip, startService } from '../helpers/tunnel.js';
import { freePort, RELAY_CLI, RelayProcess, runRelay, tempDir, type LogLine, relayctl, type CliRun } from './harness.js';




/** A log line written after `mark` (an index into proc.lines) that matches. */
function logAfter(proc: RelayProcess, mark: number, match: (l: LogLine) => boolean, what: string): Promise<LogLine> {
  return proc.waitFor((l) => proc.lines.indexOf(l) >= mark && match(l), what);
}

const reloadedWith = (key: 'added' | 'removed', id: string) => (l: LogLine) =>
  l.msg === 'config reloaded' && Array.isArray(l[key]) && (l[key] as unknown[]).includes(id);

/** Resolves once the process's stderr, from character `from` on, matches. */
function stderrAfter(proc: RelayProcess, from: number, re: RegExp, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      const text = proc.stderr.join('').slice(from);
      if (!re.test(text)) return false;
      clearTimeout(timer);
      proc.child.stderr!.off('data', check);
      resolve(text);
      return true;
    };
    const timer = setTimeout(() => {
      proc.child.stderr!.off('data', check);
      reject(new Error(`stderr never matched ${re}; got: ${proc.stderr.join('').slice(from)}`));
    }, timeoutMs);
    // RelayProcess's own listener was added first, so the chunk is already in proc.stderr here.
    proc.child.stderr!.on('data', check);
    check();
  });
}

function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/**
 * A client that keeps sending paced random bytes through an echo tunnel until finish(), hashing
 * what it sent and what came back. Paced (not flat out) so it does not starve the rest of the test
 * of CPU, and long-lived so it spans every reload in between.
 */
class ContinuousTransfer {
  private readonly socket: net.Socket;
  private readonly sent = createHash('sha256');
  private readonly received = createHash('sha256');
  sentBytes = 0;
  receivedBytes = 0;
  private error: Error | null = null;
  private readonly ended: Promise<void>;
  private readonly timer: NodeJS.Timeout;

  constructor(port: number) {
    this.socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    this.socket.on('data', (c: Buffer) => {
      this.received.update(c);
      this.receivedBytes += c.length;
    });
    this.socket.on('error', (err) => (this.error = err));
    this.ended = new Promise((r) => this.socket.once('close', () => r()));
    this.timer = setInterval(() => {
      if (this.socket.writableNeedDrain || this.socket.destroyed) return;
      const chunk = randomBytes(16 * 1024);
      this.sent.update(chunk);
      this.sentBytes += chunk.length;
      this.socket.write(chunk);
    }, 10);
  }

  /** Waits until at least `bytes` more have come back (the tunnel is flowing right now). */
  async flowing(bytes = 64 * 1024): Promise<void> {
    const target = this.receivedBytes + bytes;
    while (this.receivedBytes < target) {
      if (this.error) throw this.error;
      if (this.socket.destroyed) throw new Error('the continuous transfer was cut');
      await new Promise<void>((r) => {
        const wake = (): void => {
          this.socket.off('data', wake).off('close', wake);
          r();
        };
        this.socket.on('data', wake).on('close', wake);
      });
    }
  }

  async finish(): Promise<{ sent: string; received: string; sentBytes: number; receivedBytes: number; error: Error | null }> {
    clearInterval(this.timer);
    this.socket.end();
    await this.ended;
    return { sent: this.sent.digest('hex'), received: this.received.digest('hex'), sentBytes: this.sentBytes, receivedBytes: this.receivedBytes, error: this.error };
  }
}

function grayYaml(id: string, secret: string, controlPort: number, targetPort: number): string {
  return [
    `white: "127.0.0.1:${controlPort}"`,
    `id: ${id}`,
    `secret: "${secret}"`,
    `target: "127.0.0.1:${targetPort}"`,
    'pool: 4',
    'limits: { reconnect_base_ms: 100, reconnect_max_ms: 1000 }',
    '',
  ].join('\n');
}

const newSecret = (): string => randomBytes(32).toString('base64url');

/** Every wait below is bounded on its own; this catches anything that is not (node:test has no default). */
const T = { timeout: 30_000 };

describe('e2e: live registry edits (relayctl, console, hot reload)', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let service: Awaited<ReturnType<typeof startService>>;
  let whitePath: string;
  let socketPath: string;
  let controlPort: number;
  let stablePublic: number;
  let white: RelayProcess;
  const grays: RelayProcess[] = [];
  let transfer: ContinuousTransfer;

  const cfg = (): string[] => ['--config', whitePath];
  const showJson = async (): Promise<AdminState> => {
    const r = await relayctl(['show', '--json', ...cfg()]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as AdminState;
  };
  const startGray = async (id: string, yaml: string): Promise<RelayProcess> => {
    const path = join(dir.path, `gray-${id}.yaml`);
    await writeFile(path, yaml, { mode: 0o600 });
    const gray = runRelay(['gray', '--config', path]);
    grays.push(gray);
    await gray.waitForMsg('pool ready');
    return gray;
  };

  before(async () => {
    dir = await tempDir();
    service = await startService();
    whitePath = join(dir.path, 'white.yaml');
    socketPath = join(dir.path, 'admin.sock');
    [controlPort, stablePublic] = [await freePort(), await freePort()];
    const stableData = await freePort();
    const secret = newSecret();
    await writeFile(
      whitePath,
      [
        '# e2e white config; this comment must survive relayctl edits',
        `control: { listen: "127.0.0.1:${controlPort}" }`,
        'bind: "127.0.0.1"',
        'admin:',
        '  socket: "./admin.sock" # next to this file',
        'watch: { debounce_ms: 50 }',
        'grays:',
        '  # carries a transfer through every reload below',
        '  - id: stable',
        `    secret: "${secret}"`,
        `    public_port: ${stablePublic}`,
        `    data_port: ${stableData}`,
        '',
      ].join('\n'),
      { mode: 0o600 }, // it holds secrets: relayctl add warns about a file others can read
    );
    // stdin is a pipe so the console can be driven; --console because a pipe is not a TTY.
    const child = spawn(process.execPath, [RELAY_CLI, 'white', '--console', ...cfg()], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, RELAY_LOG_LEVEL: 'info' },
    });
    white = new RelayProcess(child);
    await white.waitForMsg('admin listening');
    await startGray('stable', grayYaml('stable', secret, controlPort, service.port));
    transfer = new ContinuousTransfer(stablePublic);
    await transfer.flowing();
  }, T);

  after(async () => {
    await transfer?.finish().catch(() => {});
    for (const g of grays) await g.kill();
    await white?.kill();
    service?.server.close();
    await dir?.cleanup();
  });

  let addedPublic = 0;

  it('relayctl add prints a gray.yaml that works through the new public port', T, async () => {
    const [pub, data] = [await freePort(), await freePort()];
    const run = await relayctl(['add', 'fresh', '--public-port', String(pub), '--data-port', String(data), '--target', `127.0.0.1:${service.port}`, ...cfg()]);
    const savedAt = Date.now();
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /^added gray "fresh" to .*white\.yaml: public port \d+, data port \d+/);
    assert.equal(run.stderr.trim().split('\n').length, 1, 'one summary line on stderr');
    assert.match(run.stdout, new RegExp(`^white: "127\\.0\\.0\\.1:${controlPort}"`, 'm'));
    const text = await readFile(whitePath, 'utf8');
    assert.match(text, /^# e2e white config; this comment must survive relayctl edits$/m);
    assert.match(text, /# next to this file/);
    assert.match(text, /# carries a transfer through every reload below/);
    assert.match(text, /- id: fresh/);

    await white.waitFor(reloadedWith('added', 'fresh'), 'reload adding "fresh"');
    await startGray('fresh', run.stdout);
    const reply = await roundTrip(pub, Buffer.from('hello through a gray added live'));
    assert.equal(reply.toString(), 'hello through a gray added live');
    assert.ok(Date.now() - savedAt < 15_000, `served ${Date.now() - savedAt} ms after the save`);
    addedPublic = pub;
    await transfer.flowing();
  });

  it('relayctl show renders the live white as a table', T, async () => {
    const run = await relayctl(['show', ...cfg()]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^GRAY\s+PUBLIC\/DATA\s+STATUS/m);
    assert.match(run.stdout, /^fresh\s+\d+\/\d+\s+connected since /m);
    assert.match(run.stdout, /^stable\s+\d+\/\d+\s+connected since .*\d+(\.\d)? [KMG]iB \/ /m);
    assert.match(run.stdout, /^last reload\s+.*: applied$/m);
    // --socket overrides the config's admin.socket
    const direct = await relayctl(['show', '--json', '--socket', socketPath, '--config', join(dir.path, 'does-not-exist.yaml')]);
    assert.equal(direct.code, 0, direct.stderr);
    assert.deepEqual(((JSON.parse(direct.stdout) as AdminState).grays.map((g) => g.id)).sort(), ['fresh', 'stable']);
  });

  it('relayctl delete closes the public port and disconnects its active client', T, async () => {
    const active = net.connect({ host: '127.0.0.1', port: addedPublic });
    const closed = closedBy(active);
    active.write('ping');
    await new Promise<void>((r) => active.once('data', () => r())); // paired and flowing
    const mark = white.lines.length;
    const run = await relayctl(['delete', 'fresh', ...cfg()]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /deleted gray "fresh"/);
    await logAfter(white, mark, reloadedWith('removed', 'fresh'), 'reload removing "fresh"');
    await closed;
    assert.ok(await connectRefused(addedPublic), 'the public port no longer accepts');
    assert.doesNotMatch(await readFile(whitePath, 'utf8'), /fresh/);
    await transfer.flowing();
  });

  it('an invalid save is rejected, the old config keeps serving, show reports it; the fix applies', T, async () => {
    const good = await readFile(whitePath, 'utf8');
    const dupData = await freePort();
    const entry = (port: number): string => [`  - id: dup`, `    secret: "${newSecret()}"`, `    public_port: ${port}`, `    data_port: ${dupData}`, ''].join('\n');
    let mark = white.lines.length;
    await writeFile(whitePath, good + entry(stablePublic)); // a port clash
    const rejected = await logAfter(
      white,
      mark,
      (l) => l.msg === 'config rejected; the running config stays' && String(l.error).includes(`${stablePublic} is already`),
      'the clash to be rejected',
    );
    assert.equal(rejected.level, 50);
    const echo = await roundTrip(stablePublic, Buffer.from('still served'));
    assert.equal(echo.toString(), 'still served');
    const state = await showJson();
    assert.equal(state.counters.lastReload?.ok, false);
    assert.match(String(state.counters.lastReload?.error), new RegExp(`public_port: ${stablePublic} is already`));
    assert.deepEqual(state.grays.map((g) => g.id), ['stable']);
    const table = await relayctl(['show', ...cfg()]);
    assert.match(table.stdout, /^last reload\s+.*FAILED, the previous config stays$/m);

    mark = white.lines.length;
    await writeFile(whitePath, good + entry(await freePort()));
    await logAfter(white, mark, reloadedWith('added', 'dup'), 'the fixed file to apply');
    assert.equal((await showJson()).counters.lastReload?.ok, true);
    await transfer.flowing();
  });

  it('a save by rename (temp file + rename) is picked up', T, async () => {
    const text = await readFile(whitePath, 'utf8');
    const block = [`  - id: renamed`, `    secret: "${newSecret()}"`, `    public_port: ${await freePort()}`, `    data_port: ${await freePort()}`, ''].join('\n');
    const temp = join(dir.path, '.white.yaml.swp');
    await writeFile(temp, text + block);
    await rename(temp, whitePath);
    await white.waitFor(reloadedWith('added', 'renamed'), 'reload after a rename save');
  });

  it('two concurrent relayctl add processes both land in the file and in the white', T, async () => {
    const ports = [await freePort(), await freePort(), await freePort(), await freePort()];
    const mark = white.lines.length;
    const [a, b] = await Promise.all([
      relayctl(['add', 'twin-a', '--public-port', String(ports[0]), '--data-port', String(ports[1]), ...cfg()]),
      relayctl(['add', 'twin-b', '--public-port', String(ports[2]), '--data-port', String(ports[3]), ...cfg()]),
    ]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    const text = await readFile(whitePath, 'utf8');
    assert.match(text, /- id: twin-a/);
    assert.match(text, /- id: twin-b/);
    const seen = new Set<unknown>();
    await logAfter(
      white,
      mark,
      (l) => {
        if (l.msg === 'config reloaded' && Array.isArray(l.added)) for (const id of l.added) seen.add(id);
        return seen.has('twin-a') && seen.has('twin-b');
      },
      'both twins applied',
    );
    const ids = (await showJson()).grays.map((g) => g.id);
    assert.ok(ids.includes('twin-a') && ids.includes('twin-b'), ids.join(','));
  });

  it('console: /show prints the table on stderr, /add edits the file and the white applies it', T, async () => {
    let from = white.stderr.join('').length;
    white.child.stdin!.write('/show\n');
    const table = await stderrAfter(white, from, /^stable\s+\d+\/\d+\s+connected since [\s\S]*^white\s+version /m);
    assert.match(table, /^GRAY\s+PUBLIC\/DATA/m);

    from = white.stderr.join('').length;
    white.child.stdin!.write('hello\n/nope\n');
    await stderrAfter(white, from, /commands start with "\/"[\s\S]*unknown command \/nope; type \/help/);

    const mark = white.lines.length;
    from = white.stderr.join('').length;
    white.child.stdin!.write(`/add from-console --public-port ${await freePort()} --data-port ${await freePort()}\n`);
    const out = await stderrAfter(white, from, /gray\.yaml for "from-console"[\s\S]*\n-----\n/);
    assert.match(out, /added gray "from-console"/);
    assert.match(out, /^secret: "[A-Za-z0-9_-]{43}"$/m);
    await logAfter(white, mark, reloadedWith('added', 'from-console'), 'the console edit to apply');
    assert.match(await readFile(whitePath, 'utf8'), /- id: from-console/);

    from = white.stderr.join('').length;
    white.child.stdin!.write('/add from-console\n');
    await stderrAfter(white, from, /error: .*already exists/);
  });

  it('the unrelated gray carried its transfer through every reload without losing a byte', T, async () => {
    await transfer.flowing();
    const r = await transfer.finish();
    assert.equal(r.error, null);
    assert.ok(r.sentBytes > 256 * 1024, `${r.sentBytes} bytes sent`);
    assert.equal(r.receivedBytes, r.sentBytes);
    assert.equal(r.received, r.sent);
  });

  it('relayctl show against a stopped white: exit 1 with a plain sentence', T, async () => {
    const mark = white.lines.length;
    white.child.kill('SIGTERM');
    await logAfter(white, mark, (l) => l.msg === 'stopped', 'the white to stop');
    assert.deepEqual(await white.exited, { code: 0, signal: null });
    await assert.rejects(lstat(socketPath), { code: 'ENOENT' }, 'the socket file is removed on stop');
    const run = await relayctl(['show', ...cfg()]);
    assert.equal(run.code, 1);
    assert.equal(run.stderr, `relayctl: the white is not running (no admin socket at ${socketPath})\n`);
    assert.equal(run.stdout, '');
  });
});

describe('e2e: ConfigMap-style symlink swap', () => {
  it('picks up a config swapped by renaming a new ..data symlink over the old one', T, async () => {
    const dir = await tempDir();
    let white: RelayProcess | undefined;
    try {
      const base = join(dir.path, 'k8s');
      const [controlPort, p1, p2] = [await freePort(), await freePort(), await freePort()];
      const config = (extra: string): string =>
        [`control: { listen: "127.0.0.1:${controlPort}" }`, 'bind: "127.0.0.1"', 'admin: { socket: null }', 'watch: { debounce_ms: 50 }', `grays: ${extra}`, ''].join('\n');
      await mkdir(join(base, '..2024_01_01_a'), { recursive: true });
      await writeFile(join(base, '..2024_01_01_a', 'white.yaml'), config('[]'));
      await symlink('..2024_01_01_a', join(base, '..data'));
      await symlink('..data/white.yaml', join(base, 'white.yaml'));
      white = runRelay(['white', '--config', join(base, 'white.yaml')]);
      await white.waitForMsg('admin listening');

      // What the kubelet does: new timestamped folder, new link beside the old, rename it over.
      await mkdir(join(base, '..2024_01_01_b'));
      await writeFile(join(base, '..2024_01_01_b', 'white.yaml'), config(`[{ id: swapped, secret: "${newSecret()}", public_port: ${p1}, data_port: ${p2} }]`));
      await symlink('..2024_01_01_b', join(base, '..data_tmp'));
      await rename(join(base, '..data_tmp'), join(base, '..data'));
      await rm(join(base, '..2024_01_01_a'), { recursive: true });
      await white.waitFor(reloadedWith('added', 'swapped'), 'reload after the symlink swap');
      assert.equal(await connectRefused(p1), false, 'the swapped-in gray\'s public port listens');
    } finally {
      await white?.kill();
      await dir.cleanup();
    }
  });
});

describe('e2e: relayctl usage', () => {
  it('exit codes: --help 0, usage errors 2, unknown gray 2', T, async () => {
    const dir = await tempDir();
    try {
      const path = join(dir.path, 'white.yaml');
      await writeFile(path, 'control: { listen: "127.0.0.1:7000" }\ngrays: []\n');
      const [help, missing, unknownCmd, unknownGray, badPort] = await Promise.all([
        relayctl(['add', '--help']),
        relayctl(['add', '--config', path]),
        relayctl(['frobnicate']),
        relayctl(['delete', 'ghost'], { RELAY_CONFIG: path }),
        relayctl(['add', 'x', '--public-port', '70000', '--config', path]),
      ]);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /^relayctl add <id>/);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /takes exactly one gray id/);
      assert.equal(unknownCmd.code, 2);
      assert.equal(unknownGray.code, 2, unknownGray.stderr);
      assert.match(unknownGray.stderr, /no gray with id "ghost"/);
      assert.equal(badPort.code, 2);
      assert.match(badPort.stderr, /--public-port "70000" is not a port number/);
    } finally {
      await dir.cleanup();
    }
  });
});
