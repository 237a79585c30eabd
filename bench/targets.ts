// The ways to reach the service: direct, through relay (white + gray), through a two-hop haproxy
// chain with the same topology, and through relay with an authorize hook. Each start function
// either returns a running, end-to-end verified target or says why it is unavailable; it never
// throws for an expected absence (haproxy not installed, relay not built), so the other columns
// still run.
import { type ChildProcess, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BENCH_DIST, HOST, REPO_ROOT, freePorts, waitEcho } from './common.js';
import { type Managed, forkScript, isLogMsg, lastLines, spawnManaged, waitMessage } from './proc.js';

export type TargetName = 'direct' | 'relay' | 'haproxy' | 'relay+authorize';
export const TARGET_NAMES: readonly TargetName[] = ['direct', 'relay', 'haproxy', 'relay+authorize'];

export interface Target {
  name: TargetName;
  /** Where the load generator connects. */
  port: number;
  /** The processes whose RSS and CPU are measured (white/gray, or hop1/hop2). */
  procs: Record<string, number>;
  /** Version or description for the results file. */
  info: Record<string, unknown>;
  /** null while all its processes run; otherwise which one died and how. */
  health: () => string | null;
  /** relay+authorize only: how many requests the authorize hook has answered so far. */
  hookRequests?: () => Promise<number | null>;
  stop: () => Promise<void>;
}

function healthOf(...ms: Managed[]): () => string | null {
  let why: string | null = null;
  for (const m of ms) void m.exited.then((how) => (why ??= `${m.name} ${how}${lastLines(m.tail, 3)}`));
  return () => why;
}

export type Started = { ok: true; target: Target } | { ok: false; reason: string; detail?: string };

/**
 * Resolves once the service answers through `port`, end to end; rejects at the deadline. The
 * default speaks to the bench's Node service (an echo); the wrk workload's targets, whose service
 * is nginx, ask for its page (bench/nginx.ts waitHttp).
 */
export type WaitReady = (port: number, deadlineMs: number) => Promise<void>;

export function startDirect(servicePort: number): Started {
  return {
    ok: true,
    target: { name: 'direct', port: servicePort, procs: {}, info: {}, health: () => null, stop: async () => {} },
  };
}

// ---------------------------------------------------------------------------------------------
// haproxy

export function haproxyVersion(bin: string): { ok: true; version: string } | { ok: false; reason: string } {
  const r = spawnSync(bin, ['-v'], { encoding: 'utf8', timeout: 5000 });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    return {
      ok: false,
      reason:
        code === 'ENOENT'
          ? `haproxy not found (${bin}); install it with: apt-get update && apt-get install -y haproxy`
          : `haproxy -v failed: ${r.error.message}`,
    };
  }
  const first = (r.stdout || r.stderr).split('\n')[0]?.trim() ?? '';
  if (r.status !== 0 || !/haproxy/i.test(first)) return { ok: false, reason: `haproxy -v failed: ${first || `status ${r.status}`}` };
  return { ok: true, version: first };
}

/**
 * One hop of the chain. Choices, and why:
 *  - mode tcp with splice-auto: the strongest plain-TCP haproxy setup on Linux; the kernel moves
 *    bulk bytes between sockets without copying them through user space when it pays off.
 *  - nbthread as relay's engine.threads (--threads, 1 unless asked): relay's white and gray each move
 *    bytes on that many engine threads, haproxy as many threads per hop, like with like.
 *  - timeouts long enough never to cut a benchmark or scale connection.
 */
export type SpliceMode = 'auto' | 'always' | 'off';

function spliceLines(mode: SpliceMode): string {
  switch (mode) {
    case 'auto':
      return '    option splice-auto';
    case 'always':
      return '    option splice-request\n    option splice-response';
    case 'off':
      return '    # splice off (--haproxy-splice off)';
  }
}

export function haproxyConfig(o: { listen: number; forwardTo: number; maxconn: number; name: string; splice?: SpliceMode; maxpipes?: number; threads?: number }): string {
  return `# ${o.name} hop of the bench's haproxy chain (generated; do not edit)
global
    nbthread ${o.threads ?? 1}
    maxconn ${o.maxconn}${o.maxpipes !== undefined ? `\n    # Splice pipes cost 2 descriptors each; capped so maxconn fits under ulimit -n.\n    maxpipes ${o.maxpipes}` : ''}
    # The bench runs haproxy in the foreground and measures it; no logging at all.

defaults
    mode tcp
${spliceLines(o.splice ?? 'auto')}
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    timeout client-fin 30s
    timeout server-fin 30s
    maxconn ${o.maxconn}

frontend ${o.name}_in
    bind ${HOST}:${o.listen} backlog 4096
    default_backend ${o.name}_out

backend ${o.name}_out
    server next ${HOST}:${o.forwardTo}
`;
}

export async function startHaproxy(opts: {
  bin: string;
  servicePort: number;
  dir: string;
  maxconn: number;
  readyTimeoutMs: number;
  splice?: SpliceMode;
  maxpipes?: number;
  threads?: number;
  waitReady?: WaitReady;
}): Promise<Started> {
  const v = haproxyVersion(opts.bin);
  if (!v.ok) return { ok: false, reason: v.reason };
  const [publicPort, grayPort] = await freePorts(2);
  if (publicPort === undefined || grayPort === undefined) return { ok: false, reason: 'no free ports' };
  fs.mkdirSync(opts.dir, { recursive: true });
  const whiteCfg = path.join(opts.dir, 'white-hop.cfg');
  const grayCfg = path.join(opts.dir, 'gray-hop.cfg');
  fs.writeFileSync(whiteCfg, haproxyConfig({ listen: publicPort, forwardTo: grayPort, maxconn: opts.maxconn, name: 'white', splice: opts.splice ?? 'auto', maxpipes: opts.maxpipes, threads: opts.threads }));
  fs.writeFileSync(grayCfg, haproxyConfig({ listen: grayPort, forwardTo: opts.servicePort, maxconn: opts.maxconn, name: 'gray', splice: opts.splice ?? 'auto', maxpipes: opts.maxpipes, threads: opts.threads }));
  // -db: foreground, no daemon; the pid we spawn is the process doing the work.
  const gray = spawnManaged('haproxy gray hop', opts.bin, ['-db', '-f', grayCfg]);
  const white = spawnManaged('haproxy white hop', opts.bin, ['-db', '-f', whiteCfg]);
  const stop = async (): Promise<void> => {
    await Promise.all([white.stop(), gray.stop()]);
  };
  try {
    const deadline = Date.now() + opts.readyTimeoutMs;
    await Promise.race([
      (opts.waitReady ?? waitEcho)(publicPort, deadline),
      white.exited.then((how) => Promise.reject(new Error(`white hop ${how}${lastLines(white.tail)}`))),
      gray.exited.then((how) => Promise.reject(new Error(`gray hop ${how}${lastLines(gray.tail)}`))),
    ]);
  } catch (e) {
    await stop();
    return { ok: false, reason: `haproxy chain did not come up: ${(e as Error).message}` };
  }
  return {
    ok: true,
    target: {
      name: 'haproxy',
      port: publicPort,
      procs: { hop1: white.pid, hop2: gray.pid },
      info: { version: v.version, splice: opts.splice ?? 'auto', whiteHopConfig: whiteCfg, grayHopConfig: grayCfg, maxconn: opts.maxconn, warnings: [...white.tail, ...gray.tail].slice(0, 10) },
      health: healthOf(white, gray),
      stop,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// relay

export const DEFAULT_RELAY_CLI = path.join(REPO_ROOT, 'dist/src/cli/relay.js');

/**
 * The environment the project's service files give relay (deploy/systemd, the Dockerfile;
 * test/deploy checks that they agree), so the bench measures relay as it is installed. A value
 * already in the bench's own environment wins: `MALLOC_ARENA_MAX= npm run bench` measures glibc's
 * default.
 */
export const RELAY_SERVICE_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

export function relayEnv(): NodeJS.ProcessEnv {
  return { ...RELAY_SERVICE_ENV, ...process.env };
}

/** A secret as the configs want it: 32 random bytes, base64url, 43 characters. */
export function newSecret(): string {
  return crypto.randomBytes(32).toString('base64url');
}

export interface RelayGrayDef {
  id: string;
  secret: string;
  publicPort: number;
  dataPort: number;
}

/** The `authorize:` block of white.yaml (docs/hooks.md), as the relay+authorize column sets it. */
export interface RelayAuthorizeDef {
  url: string;
  timeoutMs: number;
  onTimeout: 'allow' | 'deny';
  grayLogin: boolean;
  clientConnect: boolean;
}

export function whiteYaml(controlPort: number, grays: readonly RelayGrayDef[], authorize: RelayAuthorizeDef | null = null, threads?: number): string {
  const lines = [`control: { listen: "${HOST}:${controlPort}" }`, 'admin: { socket: null }'];
  if (threads !== undefined) lines.push(`engine: { threads: ${threads} }`);
  if (authorize) {
    lines.push(
      'authorize:',
      `  url: "${authorize.url}"`,
      `  timeout_ms: ${authorize.timeoutMs}`,
      `  on_timeout: ${authorize.onTimeout}`,
      `  gray_login: ${authorize.grayLogin}`,
      `  client_connect: ${authorize.clientConnect}`,
    );
  }
  lines.push('grays:');
  for (const g of grays) {
    lines.push(`  - id: ${g.id}`, `    secret: "${g.secret}"`, `    public_port: ${g.publicPort}`, `    data_port: ${g.dataPort}`);
  }
  return lines.join('\n') + '\n';
}

export function grayYaml(o: { controlPort: number; id: string; secret: string; targetPort: number; pool: number; threads?: number }): string {
  return [
    ...(o.threads !== undefined ? [`engine: { threads: ${o.threads} }`] : []),
    `white: "${HOST}:${o.controlPort}"`,
    `id: ${o.id}`,
    `secret: "${o.secret}"`,
    `target: "${HOST}:${o.targetPort}"`,
    `pool: ${o.pool}`,
  ].join('\n') + '\n';
}

export interface RelayOptions {
  cli: string;
  servicePort: number;
  dir: string;
  pool: number;
  /** engine.threads of both sides; the key is left out when not given. */
  threads?: number;
  readyTimeoutMs: number;
  /** Extra node flags for one side, e.g. --cpu-prof (profile mode). */
  nodeArgs?: { white?: string[]; gray?: string[] };
  /** An `authorize:` block for white.yaml (the relay+authorize column). */
  authorize?: RelayAuthorizeDef;
  /** Column name; 'relay' unless given. */
  name?: TargetName;
  waitReady?: WaitReady;
}

/** Why the relay CLI cannot be used, or null if it looks runnable. */
export function relayCliProblem(cli: string): string | null {
  if (!fs.existsSync(cli)) {
    return `relay CLI not built (${path.relative(process.cwd(), cli) || cli} missing; run npx tsc -p .)`;
  }
  return null;
}

export async function startRelay(o: RelayOptions): Promise<Started> {
  const problem = relayCliProblem(o.cli);
  if (problem) return { ok: false, reason: problem };
  const [controlPort, publicPort, dataPort] = await freePorts(3);
  if (controlPort === undefined || publicPort === undefined || dataPort === undefined) return { ok: false, reason: 'no free ports' };
  const secret = newSecret();
  fs.mkdirSync(o.dir, { recursive: true });
  const whiteCfg = path.join(o.dir, 'white.yaml');
  const grayCfg = path.join(o.dir, 'gray.yaml');
  fs.writeFileSync(whiteCfg, whiteYaml(controlPort, [{ id: 'bench', secret, publicPort, dataPort }], o.authorize ?? null, o.threads), { mode: 0o600 });
  fs.writeFileSync(grayCfg, grayYaml({ controlPort, id: 'bench', secret, targetPort: o.servicePort, pool: o.pool, threads: o.threads }), { mode: 0o600 });

  const deadline = Date.now() + o.readyTimeoutMs;
  const left = (): number => Math.max(100, deadline - Date.now());
  const env = relayEnv();
  const white = spawnManaged('relay white', process.execPath, [...(o.nodeArgs?.white ?? []), o.cli, 'white', '--config', whiteCfg], { cwd: o.dir, env });
  let gray: Managed | null = null;
  const stop = async (): Promise<void> => {
    // Gray first, so the white does not see a storm of data connections dying while it shuts down.
    if (gray) await gray.stop(15_000);
    await white.stop(15_000);
  };
  try {
    await white.waitForLine((l) => isLogMsg(l, 'listening'), left(), '"listening" log line');
    gray = spawnManaged('relay gray', process.execPath, [...(o.nodeArgs?.gray ?? []), o.cli, 'gray', '--config', grayCfg], { cwd: o.dir, env });
    const g = gray;
    await g.waitForLine((l) => isLogMsg(l, 'pool ready'), left(), '"pool ready" log line');
    await Promise.race([
      (o.waitReady ?? waitEcho)(publicPort, deadline),
      white.exited.then((how) => Promise.reject(new Error(`white ${how}${lastLines(white.tail)}`))),
      g.exited.then((how) => Promise.reject(new Error(`gray ${how}${lastLines(g.tail)}`))),
    ]);
  } catch (e) {
    await stop();
    const msg = (e as Error).message;
    // The reason goes into the table and the JSON: add the process's last words, which usually say why.
    const lastWords = msg.split('\n').slice(1).map((l) => l.replace(/^\s*\|\s?/, '').trim()).filter(Boolean).pop();
    const first = msg.split('\n')[0] ?? 'failed';
    return { ok: false, reason: lastWords ? `${first}: ${lastWords.slice(0, 300)}` : first, detail: msg };
  }
  return {
    ok: true,
    target: {
      name: o.name ?? 'relay',
      port: publicPort,
      procs: { white: white.pid, gray: gray.pid },
      info: { cli: o.cli, pool: o.pool, env: Object.fromEntries(Object.keys(RELAY_SERVICE_ENV).map((k) => [k, env[k] ?? ''])), ...(o.threads !== undefined ? { threads: o.threads } : {}), whiteConfig: whiteCfg, grayConfig: grayCfg, ...(o.authorize ? { authorize: o.authorize } : {}) },
      health: healthOf(white, gray),
      stop,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// relay + authorize hook

/** What the relay+authorize column puts in white.yaml: the hook is asked about every client. */
export const BENCH_AUTHORIZE = { timeoutMs: 1000, onTimeout: 'deny', grayLogin: false, clientConnect: true } as const;

/**
 * relay exactly as startRelay runs it, plus an `authorize:` block pointing at a tiny allow-all
 * HTTP server (bench/authorize-server.ts, its own process, sampled as `authorize`). Every client
 * connection then waits for one hook round trip before it is paired: the difference to the plain
 * relay column is the cost of the authorize hook per connection.
 */
export async function startRelayWithAuthorize(o: Omit<RelayOptions, 'authorize' | 'name'>): Promise<Started> {
  const problem = relayCliProblem(o.cli);
  if (problem) return { ok: false, reason: problem };
  const hook = forkScript(path.join(BENCH_DIST, 'authorize-server.js'), 'authorize');
  const stopHook = async (): Promise<void> => {
    if (hook.child.exitCode !== null || hook.child.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => hook.child.once('exit', () => resolve()));
    hook.child.kill('SIGTERM');
    await gone;
  };
  let port: number;
  try {
    ({ port } = await waitMessage(hook.child, (m): m is { type: 'ready'; port: number } => (m as { type?: string })?.type === 'ready', 10_000, 'authorize server start'));
  } catch (e) {
    await stopHook();
    return { ok: false, reason: `authorize server did not start: ${(e as Error).message}${lastLines(hook.tail, 3)}` };
  }
  const authorize: RelayAuthorizeDef = { url: `http://${HOST}:${port}/authorize`, ...BENCH_AUTHORIZE };
  const started = await startRelay({ ...o, authorize, name: 'relay+authorize' });
  if (!started.ok) {
    await stopHook();
    return started;
  }
  const relay = started.target;
  const hookExited = new Promise<string>((resolve) => hook.child.once('exit', (code, signal) => resolve(signal ? `killed by ${signal}` : `exited with code ${code}`)));
  let hookDead: string | null = null;
  void hookExited.then((how) => (hookDead = `authorize server ${how}${lastLines(hook.tail, 3)}`));
  return {
    ok: true,
    target: {
      ...relay,
      procs: { ...relay.procs, authorize: hook.pid },
      info: { ...relay.info, authorizeServer: { pid: hook.pid, port } },
      health: () => relay.health() ?? hookDead,
      // Requests the hook has answered so far (null if it cannot tell).
      hookRequests: () => requestCount(hook.child),
      stop: async () => {
        await relay.stop();
        await stopHook();
      },
    },
  };
}

function requestCount(child: ChildProcess): Promise<number | null> {
  if (!child.connected) return Promise.resolve(null);
  const answer = waitMessage(child, (m): m is { type: 'count'; requests: number } => (m as { type?: string })?.type === 'count', 5_000, 'authorize server count');
  child.send({ type: 'count' });
  return answer.then(
    (m) => m.requests,
    () => null,
  );
}
