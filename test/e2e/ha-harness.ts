// Pieces of the high-availability end-to-end tests: several `relay white` processes from one
// shared file on 127.0.1.x (the per-host flags set each one's addresses), and HAProxy in front of
// their public ports with /readyz/gray/<id> checks (docs/ha.md shows the same configuration).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort, runRelay, type RelayProcess } from './harness.js';

/** haproxy on PATH (or in /usr/sbin); a clear failure, never a silent skip, when missing. */
export function haproxyBinary(): string {
  for (const bin of ['haproxy', '/usr/sbin/haproxy']) {
    const probe = spawnSync(bin, ['-v'], { encoding: 'utf8' });
    if (probe.status === 0) return bin;
  }
  throw new Error('haproxy is not installed: the failover test needs it (Debian: apt-get install -y haproxy; .ci/run installs it)');
}

/** Ports free on 127.0.0.1, all different; the whites use them on their own 127.0.1.x address. */
export async function distinctPorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < n) {
    const p = await freePort();
    if (!ports.includes(p)) ports.push(p);
  }
  return ports;
}

export interface SharedPorts {
  readonly control: number;
  readonly publicPort: number;
  readonly dataPort: number;
  readonly metrics: number;
}

/** The one file every white runs from: only per-host keys differ, and those come from flags. */
export function sharedWhiteFile(ports: SharedPorts, grays: Array<{ id: string; secret: string }>, extra = ''): string {
  return [
    `control: { listen: "127.0.0.1:${ports.control}" }`,
    `bind: "127.0.0.1"`,
    `admin: { socket: null }`,
    `metrics: { listen: "127.0.0.1:${ports.metrics}" }`,
    extra,
    'grays:',
    ...grays.map((g, i) => `  - { id: ${g.id}, secret: "${g.secret}", public_port: ${ports.publicPort + 2 * i}, data_port: ${ports.dataPort + 2 * i} }`),
    '',
  ].join('\n');
}

/** `relay white` on `host` with the per-host flags. */
export function startWhiteOn(host: string, configPath: string, ports: SharedPorts, adminSocket: string, env: Record<string, string> = {}): RelayProcess {
  return runRelay(
    ['white', '--config', configPath, '--no-console', '--bind', host, '--control-listen', `${host}:${ports.control}`, '--metrics-listen', `${host}:${ports.metrics}`, '--admin-socket', adminSocket],
    env,
  );
}

export interface HaproxyRun {
  readonly child: ChildProcess;
  readonly port: number;
  /** `<client port> <server> <termination state> <retries>` per finished session, as logged. */
  readonly sessions: Array<{ clientPort: number; server: string; state: string; retries: number }>;
  readonly stderr: string[];
  /** Servers haproxy has UP now, from its monitor URI. */
  upCount(): Promise<number>;
  stop(): Promise<void>;
}

/** HAProxy in front of the whites' public ports, checking /readyz/gray/<id> on each metrics port. */
export async function startHaproxy(dir: string, whites: string[], ports: SharedPorts, grayId: string): Promise<HaproxyRun> {
  const bin = haproxyBinary();
  const [port, monitor] = (await distinctPorts(2)) as [number, number];
  const cfg = [
    'global',
    '  log stderr format raw local0 info',
    '  maxconn 4096',
    'defaults',
    '  mode tcp',
    '  log global',
    '  log-format "%cp %b/%s %ts %rc"',
    '  timeout connect 1s',
    '  timeout client 30s',
    '  timeout server 30s',
    // A refused connect (a white just killed) is tried again, on another white.
    '  retries 3',
    '  option redispatch 1',
    'frontend public',
    `  bind 127.0.0.1:${port}`,
    '  default_backend whites',
    'frontend monitor',
    '  mode http',
    '  no log',
    `  bind 127.0.0.1:${monitor}`,
    '  http-request return status 200 content-type text/plain lf-string "%[nbsrv(whites)]\\n"',
    'backend whites',
    '  balance roundrobin',
    '  option httpchk',
    `  http-check send meth GET uri /readyz/gray/${grayId}`,
    '  http-check expect status 200',
    `  default-server check port ${ports.metrics} inter 200ms fall 2 rise 1`,
    ...whites.map((host, i) => `  server w${i + 1} ${host}:${ports.publicPort}`),
    '',
  ].join('\n');
  const path = join(dir, 'haproxy.cfg');
  await writeFile(path, cfg);
  const check = spawnSync(bin, ['-c', '-f', path], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`haproxy refused ${path}: ${check.stdout}${check.stderr}`);
  const child = spawn(bin, ['-db', '-f', path], { stdio: ['ignore', 'ignore', 'pipe'] });
  const sessions: HaproxyRun['sessions'] = [];
  const stderr: string[] = [];
  let buffered = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => {
    buffered += text;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      // %rc is "+N" when the session was redispatched to another server.
      const m = /^(\d+) whites\/(\S+) (\S+) \+?(\d+)$/.exec(line.trim());
      if (m) sessions.push({ clientPort: Number(m[1]), server: m[2]!, state: m[3]!, retries: Number(m[4]) });
      else stderr.push(line);
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    port,
    sessions,
    stderr,
    async upCount() {
      const res = await request(`http://127.0.0.1:${monitor}/`);
      return Number((await res.body.text()).trim());
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Polls `probe` until it holds; for state only reachable by asking (haproxy's view of its servers). */
export async function until(probe: () => Promise<boolean> | boolean, what: string, timeoutMs: number, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await Promise.resolve(probe()).catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
