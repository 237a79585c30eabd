// From the validated YAML data (snake_case, defaults filled in by the schema) to the frozen
// camelCase shapes in types.ts. This is also where the rules a JSON Schema cannot express live:
// host:port syntax, port clashes, unique ids, secrets, loopback-only admin TCP, a token for a
// dashboard off loopback.
//
// The input has passed the schema only if no issue was recorded; the code therefore checks every
// type it relies on, so that it can still add its own findings next to the schema's (all errors at
// once) without tripping over a value the schema already rejected.
import { dirname, isAbsolute, resolve } from 'node:path';
import { ErrorCodes } from '../errors.js';
import { DEFAULT_LIMITS, resolveLimits, type Limits } from '../limits.js';
import { parseHost, parseHostPort, isLoopbackHost } from './address.js';
import { type IssueList, type PathSegment } from './issues.js';
import { checkPortClashes, parsePortRange, type PortClaim, type PortRange } from './ports.js';
import { adminTokenProblem, MAX_TOKEN_CHARS, MIN_TOKEN_CHARS } from '../admin/admin-auth.js';
import { resolveSecret, type SecretContext } from './secret.js';
import { camelCase, snakeCase } from './schema.js';
import type { AuthorizeHookConfig, GrayConfig, GrayEntry, HookConfig, HostPort, WhiteConfig } from './types.js';
import { grayServicesAt, whiteServicesAt } from './services.js';

type Obj = Record<string, unknown>;

export interface NormalizeContext {
  /** Absolute path of the file, or null for text given in code. */
  readonly path: string | null;
  readonly issues: IssueList;
  readonly env: NodeJS.ProcessEnv;
  readonly lenientSecretSources: boolean;
  /** Listening addresses and gray ports may be 0 (the OS chooses): ParseOptions.listenPortZero. */
  readonly listenPortZero: boolean;
}

function obj(v: unknown): Obj | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : null;
}
function str(v: unknown, fallback: string): string {
  return typeof v === 'string' ? v : fallback;
}
function bool(v: unknown, fallback: boolean): boolean {
  return typeof v === 'boolean' ? v : fallback;
}
function int(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isInteger(v) ? v : fallback;
}

/** Relative paths in a config are relative to the file's folder, not to wherever relay was started. */
function baseDirOf(ctx: NormalizeContext): string {
  return ctx.path === null ? process.cwd() : dirname(ctx.path);
}

function secretContext(ctx: NormalizeContext): SecretContext {
  return { baseDir: baseDirOf(ctx), env: ctx.env, lenientSources: ctx.lenientSecretSources };
}

/** listen: an address to listen on, where port 0 may be allowed; otherwise one to dial. */
function hostPortAt(v: unknown, segments: PathSegment[], ctx: NormalizeContext, listen = false): HostPort | null {
  if (typeof v !== 'string') return null;
  const parsed = parseHostPort(v, listen && ctx.listenPortZero);
  if (!parsed.ok) {
    ctx.issues.add(segments, `${JSON.stringify(v)} ${parsed.reason}`);
    return null;
  }
  return parsed.value;
}

function limitsAt(v: unknown, segments: PathSegment[], ctx: NormalizeContext): Readonly<Limits> {
  const overrides: Partial<Limits> = {};
  const o = obj(v);
  if (o !== null) {
    for (const [key, value] of Object.entries(o)) {
      const name = camelCase(key);
      if (name in DEFAULT_LIMITS && typeof value === 'number' && Number.isInteger(value)) overrides[name as keyof Limits] = value;
    }
  }
  const limits = resolveLimits(overrides);
  // Pairs that only make sense in one order; catching them here beats a confusing runtime.
  const pairs: Array<[keyof Limits, keyof Limits]> = [
    ['frameMaxBytesBeforeAuth', 'frameMaxBytesAfterAuth'],
    ['authFailurePenaltyBaseMs', 'authFailurePenaltyMaxMs'],
    ['reconnectBaseMs', 'reconnectMaxMs'],
  ];
  for (const [low, high] of pairs) {
    if (limits[low] > limits[high]) {
      ctx.issues.add(
        [...segments, snakeCase(low)],
        `${limits[low]} is above ${snakeCase(high)} (${limits[high]}); it must not be`,
      );
    }
  }
  return limits;
}

function logAt(v: unknown): { level: string } {
  return { level: str(obj(v)?.level, 'info') };
}

export async function normalizeWhite(raw: Obj, ctx: NormalizeContext): Promise<WhiteConfig> {
  const { issues } = ctx;
  const baseDir = baseDirOf(ctx);
  const limits = limitsAt(raw.limits, ['limits'], ctx);

  const control = hostPortAt(obj(raw.control)?.listen, ['control', 'listen'], ctx, true) ?? { host: '0.0.0.0', port: 0 };

  let bind = str(raw.bind, '0.0.0.0');
  if (typeof raw.bind === 'string') {
    const parsed = parseHost(raw.bind);
    if (parsed.ok) bind = parsed.value;
    else issues.add(['bind'], `${JSON.stringify(raw.bind)} ${parsed.reason}`);
  }

  // admin
  const adminRaw = obj(raw.admin) ?? {};
  let socket: string | null = null;
  if (typeof adminRaw.socket === 'string') {
    socket = isAbsolute(adminRaw.socket) ? adminRaw.socket : resolve(baseDir, adminRaw.socket);
    // sun_path is 108 bytes on Linux, 104 on the BSDs and macOS, both with the terminating NUL;
    // listen() would fail later with a less helpful EINVAL.
    const max = process.platform === 'linux' ? 107 : 103;
    if (Buffer.byteLength(socket) > max) {
      issues.add(['admin', 'socket'], `${socket} is ${Buffer.byteLength(socket)} bytes long, a Unix socket path may have at most ${max}; use a shorter path`);
    }
  }
  let adminTcp: WhiteConfig['admin']['tcp'] = null;
  const tcpRaw = obj(adminRaw.tcp);
  if (tcpRaw !== null) {
    const listen = hostPortAt(tcpRaw.listen, ['admin', 'tcp', 'listen'], ctx, true);
    if (listen !== null && !isLoopbackHost(listen.host)) {
      issues.add(
        ['admin', 'tcp', 'listen'],
        `${JSON.stringify(tcpRaw.listen)} is not a loopback address; the admin TCP listener may only use 127.0.0.1, ::1 or localhost`,
      );
    }
    const token = str(tcpRaw.token, '');
    // The schema reports a length out of bounds; the rest of the rule (the one the admin server
    // enforces too) is checked here.
    const tokenProblem = token.length >= MIN_TOKEN_CHARS && token.length <= MAX_TOKEN_CHARS ? adminTokenProblem(token) : null;
    if (tokenProblem !== null) issues.add(['admin', 'tcp', 'token'], tokenProblem);
    if (listen !== null) adminTcp = { host: listen.host, port: listen.port, token };
  }

  // ports.range
  let portsRange: PortRange | null = null;
  const rangeText = obj(raw.ports)?.range;
  if (typeof rangeText === 'string') {
    const parsed = parsePortRange(rangeText);
    if (parsed.ok) portsRange = parsed.value;
    else issues.add(['ports', 'range'], parsed.reason);
  }

  const metricsRaw = obj(raw.metrics);
  const metrics = metricsRaw === null ? null : hostPortAt(metricsRaw.listen, ['metrics', 'listen'], ctx, true);

  // dashboard: anyone who can reach a non-loopback address could read it, so that needs a token.
  let dashboard: WhiteConfig['dashboard'] = null;
  const dashboardRaw = obj(raw.dashboard);
  if (dashboardRaw !== null) {
    const listen = hostPortAt(dashboardRaw.listen, ['dashboard', 'listen'], ctx, true);
    const token = typeof dashboardRaw.token === 'string' ? dashboardRaw.token : null;
    if (listen !== null && !isLoopbackHost(listen.host) && token === null) {
      issues.add(
        ['dashboard', 'listen'],
        `${JSON.stringify(dashboardRaw.listen)} is not a loopback address; a dashboard reachable from other machines requires dashboard.token`,
      );
    }
    if (listen !== null) dashboard = { host: listen.host, port: listen.port, token };
  }

  // hooks
  const hooks: HookConfig[] = [];
  const hooksRaw = Array.isArray(raw.hooks) ? raw.hooks : [];
  for (const [i, h] of hooksRaw.entries()) {
    const ho = obj(h);
    if (ho === null) continue;
    const url = urlAt(ho.url, ['hooks', i, 'url'], ctx);
    const secret = await resolveSecret(ho, ['hooks', i], secretContext(ctx), issues, 'webhook');
    hooks.push({
      url,
      events: Array.isArray(ho.events) ? ho.events.filter((e): e is string => typeof e === 'string') : [],
      secret,
      timeoutMs: int(ho.timeout_ms, limits.hookTimeoutMs),
    });
  }

  // authorize
  let authorize: AuthorizeHookConfig | null = null;
  const authRaw = obj(raw.authorize);
  if (authRaw !== null) {
    authorize = {
      url: urlAt(authRaw.url, ['authorize', 'url'], ctx),
      secret: await resolveSecret(authRaw, ['authorize'], secretContext(ctx), issues, 'webhook'),
      timeoutMs: int(authRaw.timeout_ms, 1000),
      onTimeout: authRaw.on_timeout === 'allow' ? 'allow' : 'deny',
      grayLogin: bool(authRaw.gray_login, true),
      clientConnect: bool(authRaw.client_connect, false),
    };
  }

  // grays
  const grays: GrayEntry[] = [];
  const graysRaw = Array.isArray(raw.grays) ? raw.grays : [];
  const ids = new Map<string, number>();
  const claims: PortClaim[] = [];
  // The white's own listeners come first so a gray that takes one of their ports is the one named.
  if (control.port !== 0) claims.push({ port: control.port, path: ['control', 'listen'], owner: 'the control port (control.listen)' });
  if (adminTcp !== null) claims.push({ port: adminTcp.port, path: ['admin', 'tcp', 'listen'], owner: 'the admin TCP port (admin.tcp.listen)' });
  if (metrics !== null) claims.push({ port: metrics.port, path: ['metrics', 'listen'], owner: 'the metrics port (metrics.listen)' });
  if (dashboard !== null) claims.push({ port: dashboard.port, path: ['dashboard', 'listen'], owner: 'the dashboard port (dashboard.listen)' });

  for (const [i, g] of graysRaw.entries()) {
    const go = obj(g);
    if (go === null) continue;
    const id = typeof go.id === 'string' ? go.id : '';
    if (typeof go.id === 'string') {
      const first = ids.get(go.id);
      if (first !== undefined) issues.addAlways(['grays', i, 'id'], `${JSON.stringify(go.id)} is already the id of grays[${first}]`, ErrorCodes.CONFIG_CONFLICT);
      else ids.set(go.id, i);
    }
    const services = whiteServicesAt(go, ['grays', i], issues);
    const dataPort = int(go.data_port, 0);
    for (const [j, s] of services.entries()) {
      if (s.publicPort < 1 || s.publicPort > 65535) continue;
      const single = go.services === undefined || go.services === null;
      claims.push(
        single
          ? { port: s.publicPort, path: ['grays', i, 'public_port'], owner: `the public_port of grays[${i}]` }
          : { port: s.publicPort, path: ['grays', i, 'services', j, 'public_port'], owner: `the public_port of service ${JSON.stringify(s.name)} of grays[${i}]` },
      );
    }
    if (dataPort >= 1 && dataPort <= 65535) claims.push({ port: dataPort, path: ['grays', i, 'data_port'], owner: `the data_port of grays[${i}]` });
    const secret = await resolveSecret(go, ['grays', i], secretContext(ctx), issues);
    const idleTimeoutMs = typeof go.idle_timeout_ms === 'number' ? go.idle_timeout_ms : null;
    grays.push({ id, secret: secret ?? Buffer.alloc(0), services, dataPort, idleTimeoutMs });
  }
  checkPortClashes(claims, issues);

  const watchRaw = obj(raw.watch) ?? {};
  return {
    path: ctx.path,
    control,
    bind,
    admin: { socket, tcp: adminTcp },
    portsRange,
    dataSourceCheck: bool(raw.data_source_check, true),
    clientKeepAlive: bool(raw.client_keep_alive, true),
    grays,
    hooks,
    authorize,
    metrics,
    dashboard,
    log: logAt(raw.log),
    engine: engineAt(raw.engine),
    watch: { polling: bool(watchRaw.polling, false), debounceMs: int(watchRaw.debounce_ms, 200) },
    limits,
  };
}

function urlAt(v: unknown, segments: PathSegment[], ctx: NormalizeContext): string {
  if (typeof v !== 'string') return '';
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    ctx.issues.add(segments, `${JSON.stringify(v)} is not a valid URL`);
    return v;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    ctx.issues.add(segments, `${JSON.stringify(v)} is not an http:// or https:// URL`);
  }
  return url.href;
}

export async function normalizeGray(raw: Obj, ctx: NormalizeContext): Promise<GrayConfig> {
  const { issues } = ctx;
  const whites: HostPort[] = [];
  if (Array.isArray(raw.white)) {
    for (const [i, w] of raw.white.entries()) {
      const hp = hostPortAt(w, ['white', i], ctx);
      if (hp !== null) whites.push(hp);
    }
  } else {
    const hp = hostPortAt(raw.white, ['white'], ctx);
    if (hp !== null) whites.push(hp);
  }
  let dataHost: string | null = null;
  if (typeof raw.data_host === 'string') {
    const parsed = parseHost(raw.data_host);
    if (!parsed.ok) issues.add(['data_host'], `${JSON.stringify(raw.data_host)} ${parsed.reason}`);
    // One data host for several whites would send every session's pool to one of them.
    else if (Array.isArray(raw.white)) issues.add(['data_host'], `${JSON.stringify(raw.data_host)} is given with a list of whites; data_host is only for a single white (each session opens its data connections to the white it reached)`);
    else dataHost = parsed.value;
  }
  const services = grayServicesAt(raw, issues, (v, segments) => hostPortAt(v, segments, ctx));
  const secret = await resolveSecret(raw, [], secretContext(ctx), issues);
  const statusRaw = obj(raw.status);
  const status = statusRaw === null ? null : hostPortAt(statusRaw.listen, ['status', 'listen'], ctx, true);
  return {
    path: ctx.path,
    whites,
    dataHost,
    resolveIntervalMs: int(raw.resolve_interval_ms, 30_000),
    id: str(raw.id, ''),
    secret: secret ?? Buffer.alloc(0),
    services,
    pool: int(raw.pool, 8),
    status,
    log: logAt(raw.log),
    engine: engineAt(raw.engine),
    limits: limitsAt(raw.limits, ['limits'], ctx),
  };
}

/** engine.threads (the schema checked its range); null: the default, decided at startup. */
function engineAt(v: unknown): { threads: number | null } {
  const threads = obj(v)?.threads;
  return { threads: typeof threads === 'number' ? threads : null };
}
