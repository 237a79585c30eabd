// The white's admin API: small HTTP (node:http) for `relayctl show`, scrapers and reload requests.
//
// Listeners:
// - a Unix socket, mode 0600: the file system decides who may talk to the white (its own user);
// - optionally a loopback TCP listener, for places where a socket file is awkward (a sidecar in
//   another container); there anyone on the host can connect, and anyone can listen on the port
//   while the white is not, so requests carry a single-use HMAC under the token and the token
//   itself never crosses the wire (admin-auth.ts);
// - optionally a metrics-only TCP listener (config `metrics`), for Prometheus, health checks and
//   load balancers: it serves /metrics, /healthz and the readiness checks (/readyz,
//   /readyz/gray/<id>) and nothing else, so opening it to a scraper exposes no control.
//
// Every listener is bounded: request headers and bodies are capped, a request must arrive within
// a deadline, handlers have a deadline, connections are capped. The API has no request bodies
// worth reading, so the body cap is tiny.
import { chmod, lstat, unlink } from 'node:fs/promises';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { HostPort } from '../config/types.js';
import type { WhiteSnapshot } from '../engine/stats.js';
import { ErrorCodes, RelayError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  adminTokenProblem,
  checkRequestMac,
  CLIENT_NONCE_HEADER,
  AUTH_SCHEME,
  IssuedNonces,
  isNonce,
  parseAuthorization,
  serverProof,
} from './admin-auth.js';
import type { EngineThreadsState } from '../engine/substrate/data-plane.js';
import { METRICS_CONTENT_TYPE, renderMetrics } from './metrics.js';
import { startProcessMetrics } from './process-metrics.js';
import { grayReadiness, type GrayReadiness } from './readiness.js';

/** `GET /v1/state`: the engine's snapshot plus the white's version, data plane and engine
 *  threads (null on the JS plane). */
export type AdminState = WhiteSnapshot & { version: string; dataPlane?: 'splice' | 'js'; engine?: EngineThreadsState | null };

/** `POST /v1/reload`: what the reload it ran ended with. */
export interface ReloadOutcome {
  readonly ok: boolean;
  /** Epoch ms when the reload finished. */
  readonly at: number;
  readonly error: string | null;
  /** Applied, but not all of it: what the white does not run as the file says, "key: why". */
  readonly notApplied?: readonly string[];
}

export interface AdminHandlers {
  state(): AdminState;
  reload(): Promise<ReloadOutcome>;
  /** One gray's readiness without a whole snapshot (load balancers ask often); undefined: not in
   *  the config. Read from state() when absent. */
  grayReadiness?(id: string): GrayReadiness | undefined;
}

export interface AdminServerOptions {
  readonly socket: string | null;
  readonly tcp: (HostPort & { readonly token: string }) | null;
  readonly metrics: HostPort | null;
  readonly logger: Logger;
  /** The clock of challenge expiry; tests move it. */
  readonly now?: () => number;
}

/** Bounds of every admin listener. Exported for tests that cross them. */
export const ADMIN_LIMITS = {
  maxBodyBytes: 1024,
  maxHeaderBytes: 8 * 1024,
  /** The whole request (headers and body) must arrive within this. */
  requestTimeoutMs: 10_000,
  headersTimeoutMs: 5_000,
  keepAliveTimeoutMs: 5_000,
  /** A handler (a reload) that takes longer gets a 503; the reload itself carries on. */
  handlerTimeoutMs: 30_000,
  maxConnections: 64,
  /** Challenges handed out on the TCP listener and not used yet; past it the oldest is forgotten. */
  maxOutstandingChallenges: 1024,
  /** How long a challenge's nonce may be used. relayctl uses it at once. */
  challengeTtlMs: 10_000,
} as const;

/** The TCP listener's token and the nonces it handed out. */
interface TokenCheck {
  readonly token: string;
  readonly nonces: IssuedNonces;
}

type Route = (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void> | void;
/** GET /healthz: the process is alive and its event loop answers. */
const HEALTHZ = both((_req, res) => sendText(res, 200, 'ok'));

interface RouteTable {
  readonly [path: string]: { readonly [method: string]: Route };
}

export class AdminServer {
  private unixServer: http.Server | null = null;
  private tcpServer: http.Server | null = null;
  private metricsServer: http.Server | null = null;
  /** Inode of the socket file we created, so close() never removes someone else's. */
  private socketIno: number | null = null;
  private closed = false;

  constructor(
    private readonly options: AdminServerOptions,
    private readonly handlers: AdminHandlers,
  ) {}

  /** Bound addresses (ports are the real ones when the config asked for port 0). */
  get addresses(): { socket: string | null; tcp: HostPort | null; metrics: HostPort | null } {
    return {
      socket: this.unixServer ? this.options.socket : null,
      tcp: addressOf(this.tcpServer),
      metrics: addressOf(this.metricsServer),
    };
  }

  async start(): Promise<void> {
    const { socket, tcp, metrics } = this.options;
    const api = this.apiRoutes();
    try {
      if (socket !== null) {
        this.unixServer = this.createServer(api, null);
        await this.listenUnix(this.unixServer, socket);
      }
      if (tcp !== null) {
        // The config validation uses the same check: a token that passes it is one this accepts.
        const problem = adminTokenProblem(tcp.token);
        if (problem !== null) throw new RelayError(ErrorCodes.CONFIG_INVALID, `admin.tcp.token: ${problem}`);
        const nonces = new IssuedNonces(ADMIN_LIMITS.maxOutstandingChallenges, ADMIN_LIMITS.challengeTtlMs, this.options.now);
        this.tcpServer = this.createServer(api, { token: tcp.token, nonces });
        await listenTcp(this.tcpServer, tcp, 'admin TCP listener');
      }
      if (metrics !== null) {
        this.metricsServer = this.createServer({ '/metrics': api['/metrics']!, '/healthz': HEALTHZ, '/readyz': api['/readyz']!, '/readyz/gray/': api['/readyz/gray/']! }, null);
        startProcessMetrics();
        await listenTcp(this.metricsServer, metrics, 'metrics listener');
      }
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([closeServer(this.unixServer), closeServer(this.tcpServer), closeServer(this.metricsServer)]);
    const path = this.options.socket;
    if (path !== null && this.socketIno !== null) {
      // libuv usually unlinks the socket on close; this covers the case where it did not, and
      // leaves alone a socket file that another process has put there since.
      const st = await lstat(path).catch(() => null);
      if (st !== null && st.isSocket() && st.ino === this.socketIno) await unlink(path).catch(() => {});
    }
  }

  private apiRoutes(): RouteTable {
    return {
      '/v1/state': {
        GET: (_req, res) => sendJson(res, 200, this.handlers.state()),
      },
      '/metrics': {
        GET: (_req, res) => {
          const state = this.handlers.state();
          const body = renderMetrics(state, state.dataPlane);
          res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE, 'content-length': Buffer.byteLength(body) });
          res.end(body);
        },
      },
      // Answering at all means listening with a loaded config: the listeners start after both.
      '/readyz': both((_req, res) => sendText(res, 200, 'white is up')),
      // A key ending in '/' takes every path under it: /readyz/gray/<id>.
      '/readyz/gray/': both((req, res) => {
        const raw = new URL(req.url ?? '/', 'http://admin').pathname.slice('/readyz/gray/'.length);
        let id = raw;
        try {
          id = decodeURIComponent(raw);
        } catch {
          // Not valid percent-encoding: no configured id looks like it, so it is answered as unknown.
        }
        const gray = this.handlers.grayReadiness ? this.handlers.grayReadiness(id) : this.handlers.state().grays.find((g) => g.id === id);
        const answer = grayReadiness(id, gray);
        sendText(res, answer.status, answer.text);
      }),
      '/v1/reload': {
        POST: async (_req, res) => {
          const outcome = await this.handlers.reload();
          // 422: the request was fine, the file it asked to apply was not.
          sendJson(res, outcome.ok ? 200 : 422, outcome);
        },
      },
    };
  }

  private createServer(routes: RouteTable, auth: TokenCheck | null): http.Server {
    const server = http.createServer({ maxHeaderSize: ADMIN_LIMITS.maxHeaderBytes }, (req, res) => {
      void this.handle(routes, auth, req, res);
    });
    server.requestTimeout = ADMIN_LIMITS.requestTimeoutMs;
    server.headersTimeout = ADMIN_LIMITS.headersTimeoutMs;
    server.keepAliveTimeout = ADMIN_LIMITS.keepAliveTimeoutMs;
    server.maxConnections = ADMIN_LIMITS.maxConnections;
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      else socket.destroy();
    });
    return server;
  }

  private async handle(routes: RouteTable, auth: TokenCheck | null, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      if (auth !== null) {
        if (req.url === '/v1/challenge' && req.method === 'POST') return challenge(auth, req, res);
        if (!authorized(auth, req)) {
          res.setHeader('www-authenticate', AUTH_SCHEME);
          return sendJson(res, 401, { error: 'missing, wrong or reused authorization: ask POST /v1/challenge first (see docs/relayctl.md)' }, true);
        }
      }
      if (!(await readCappedBody(req))) {
        return sendJson(res, 413, { error: `request body over ${ADMIN_LIMITS.maxBodyBytes} bytes` }, true);
      }
      const path = new URL(req.url ?? '/', 'http://admin').pathname;
      const methods = Object.hasOwn(routes, path) ? routes[path] : prefixRoute(routes, path);
      if (!methods) return sendJson(res, 404, { error: `no route ${path}` });
      const method = req.method ?? 'GET';
      const route = Object.hasOwn(methods, method) ? methods[method] : undefined;
      if (!route) {
        res.setHeader('allow', Object.keys(methods).join(', '));
        return sendJson(res, 405, { error: `${method} is not allowed on ${path}` });
      }
      await withDeadline(Promise.resolve(route(req, res)), ADMIN_LIMITS.handlerTimeoutMs);
    } catch (err) {
      const timedOut = err instanceof DeadlineError;
      if (!timedOut) this.options.logger.error({ err, url: req.url }, 'admin request failed');
      if (!res.headersSent) {
        sendJson(res, timedOut ? 503 : 500, { error: timedOut ? `no answer within ${ADMIN_LIMITS.handlerTimeoutMs} ms` : errorText(err) });
      } else {
        res.destroy();
      }
    }
  }

  private async listenUnix(server: http.Server, path: string): Promise<void> {
    await removeStaleSocket(path);
    // The socket must never exist with looser permissions, not even for the moment between bind
    // and chmod: bind under a umask that leaves only the owner's read/write. net's listen() binds
    // synchronously in a non-cluster process, so the umask is restored before anything else runs.
    const previous = process.umask(0o177);
    let listening: Promise<void>;
    try {
      listening = listenOn(server, { path });
    } finally {
      process.umask(previous);
    }
    try {
      await listening;
    } catch (err) {
      throw listenError(err, `admin socket ${path}`);
    }
    // Belt and braces: on file systems that ignore the umask for sockets, this is what holds.
    await chmod(path, 0o600);
    const st = await lstat(path);
    this.socketIno = st.ino;
    if ((st.mode & 0o777) !== 0o600) {
      throw new RelayError(ErrorCodes.LISTEN, `admin socket ${path} has mode ${(st.mode & 0o777).toString(8)}, expected 600`, { details: { path } });
    }
  }
}

/**
 * A socket file left behind by a white that crashed blocks bind() with EADDRINUSE. Remove it only
 * when nothing answers on it: a live white (another process with the same config) keeps its socket.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw listenError(err, `admin socket ${path}`);
  });
  if (st === null) return;
  if (!st.isSocket()) {
    throw new RelayError(ErrorCodes.LISTEN, `admin socket ${path}: a file that is not a socket is in the way; not removing it`, { details: { path } });
  }
  if (await answers(path)) {
    throw new RelayError(ErrorCodes.LISTEN, `admin socket ${path} is in use by a running process (another white with this config?)`, {
      details: { path },
    });
  }
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw listenError(err, `admin socket ${path}`);
  });
}

/** True when something accepts connections on the socket. A slow answer counts as alive. */
function answers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect({ path });
    const done = (alive: boolean): void => {
      clearTimeout(timer);
      probe.destroy();
      resolve(alive);
    };
    const timer = setTimeout(() => done(true), timeoutMs);
    probe.once('connect', () => done(true));
    probe.once('error', (err: NodeJS.ErrnoException) => done(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'));
  });
}

async function listenTcp(server: http.Server, at: HostPort, what: string): Promise<void> {
  try {
    await listenOn(server, { host: at.host, port: at.port });
  } catch (err) {
    throw listenError(err, `${what} ${at.host}:${at.port}`);
  }
}

function listenOn(server: http.Server, options: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function listenError(err: unknown, what: string): RelayError {
  const code = (err as NodeJS.ErrnoException).code ?? 'error';
  return new RelayError(ErrorCodes.LISTEN, `${what}: cannot listen (${code})`, { cause: err, details: { errno: code } });
}

async function closeServer(server: http.Server | null): Promise<void> {
  if (server === null || !server.listening) return;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // relayctl and scrapers keep no long requests; idle keep-alive sockets would hold close() open.
  server.closeAllConnections();
  await closed;
}

function addressOf(server: http.Server | null): HostPort | null {
  const a = server?.address();
  if (!a || typeof a === 'string') return null;
  return { host: (a as AddressInfo).address, port: (a as AddressInfo).port };
}

/** Step 2 of admin-auth.ts: a fresh single-use nonce, and the proof that this white holds the token. */
function challenge(auth: TokenCheck, req: http.IncomingMessage, res: http.ServerResponse): void {
  const clientNonce = req.headers[CLIENT_NONCE_HEADER];
  if (!isNonce(clientNonce)) {
    return sendJson(res, 400, { error: `${CLIENT_NONCE_HEADER}: 32 random bytes as base64url required` }, true);
  }
  const nonce = auth.nonces.issue();
  sendJson(res, 200, { nonce, proof: serverProof(auth.token, clientNonce, nonce) });
}

/** Step 3: a mac over this method and path under a nonce this listener issued; the nonce is used up. */
function authorized(auth: TokenCheck, req: http.IncomingMessage): boolean {
  const given = parseAuthorization(req.headers.authorization);
  if (given === null || !auth.nonces.take(given.nonce)) return false;
  return checkRequestMac(auth.token, given.nonce, req.method ?? '', req.url ?? '', given.mac);
}

/** Reads and discards the body; false once it grows past the cap (the connection is then closed). */
function readCappedBody(req: http.IncomingMessage): Promise<boolean> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > ADMIN_LIMITS.maxBodyBytes) return Promise.resolve(false);
  if (req.readableEnded) return Promise.resolve(true);
  return new Promise((resolve) => {
    let seen = 0;
    const onData = (chunk: Buffer): void => {
      seen += chunk.length;
      if (seen > ADMIN_LIMITS.maxBodyBytes) {
        req.off('data', onData);
        req.pause();
        resolve(false);
      }
    };
    req.on('data', onData);
    req.once('end', () => resolve(seen <= ADMIN_LIMITS.maxBodyBytes));
    req.once('error', () => resolve(false));
  });
}

/** The routes of the longest key ending in '/' that `path` extends, if any. */
function prefixRoute(routes: RouteTable, path: string): RouteTable[string] | undefined {
  let best: string | null = null;
  for (const key of Object.keys(routes)) {
    if (key.endsWith('/') && path.startsWith(key) && path.length > key.length && (best === null || key.length > best.length)) best = key;
  }
  return best === null ? undefined : routes[best];
}

/** GET, and HEAD for checkers that send it (node:http leaves the body out of a HEAD answer). */
function both(route: Route): { readonly [method: string]: Route } {
  return { GET: route, HEAD: route };
}

function sendText(res: http.ServerResponse, status: number, line: string): void {
  const text = `${line}\n`;
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, close = false): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(text);
}

class DeadlineError extends Error {}

function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError()), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
