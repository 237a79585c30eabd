// The dashboard's HTTP listener: one page (HTML, CSS, the compiled page script), its state as JSON
// and a server-sent event stream. Read-only: GET and HEAD only, and no route changes anything.
//
// Access: on loopback without a token, anyone on the host may look (as with `relayctl show`
// through the admin socket's owner, but wider), so the Host header must name an IP address or
// localhost: a web page elsewhere cannot reach it by pointing a DNS name of its own at 127.0.0.1
// (DNS rebinding). With a token, every request must carry it: the browser as the password of
// HTTP Basic auth (it asks once and sends it with the stream too), scripts as a Bearer token.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { gzip } from 'node:zlib';
import type { HostPort } from '../config/types.js';
import { ErrorCodes, RelayError } from '../errors.js';
import type { Logger } from '../log.js';
import type { DashboardFeed } from './feed.js';

export interface DashboardLimits {
  /** Event streams open at once; one more gets a 503. */
  readonly maxStreams: number;
  readonly maxConnections: number;
  readonly maxHeaderBytes: number;
  readonly headersTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
}

export const DASHBOARD_LIMITS: DashboardLimits = {
  maxStreams: 16,
  maxConnections: 64,
  maxHeaderBytes: 8 * 1024,
  headersTimeoutMs: 5_000,
  keepAliveTimeoutMs: 5_000,
};

/** Smaller states go as they are: compressing them saves less than it costs. */
const GZIP_MIN_BYTES = 4096;

/** Sent with every answer. The page loads only its own script and style sheet, talks only to
 *  its own origin, may not be framed, and sends no referrer anywhere. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'cache-control': 'no-store',
};

export interface DashboardServerOptions extends HostPort {
  readonly token: string | null;
  readonly logger: Logger;
  readonly limits?: DashboardLimits;
}

interface Asset {
  readonly type: string;
  readonly body: Buffer;
}

/** The page's files: HTML and CSS as written in src/dashboard/page/, the script as tsc built it. */
const ASSET_FILES: ReadonlyArray<[string, URL, string]> = [
  ['/', new URL('../../../src/dashboard/page/index.html', import.meta.url), 'text/html; charset=utf-8'],
  ['/style.css', new URL('../../../src/dashboard/page/style.css', import.meta.url), 'text/css; charset=utf-8'],
  ['/app.js', new URL('./page/app.js', import.meta.url), 'text/javascript; charset=utf-8'],
];

export class DashboardServer {
  private server: http.Server | null = null;
  private readonly assets = new Map<string, Asset>();
  private readonly expected: Buffer | null;
  private readonly limits: DashboardLimits;
  private readonly responses = new Set<http.ServerResponse>();

  constructor(
    private readonly options: DashboardServerOptions,
    private readonly feed: DashboardFeed,
  ) {
    this.expected = options.token === null ? null : digest(options.token);
    this.limits = options.limits ?? DASHBOARD_LIMITS;
  }

  get address(): HostPort | null {
    const a = this.server?.address();
    if (!a || typeof a === 'string') return null;
    return { host: (a as AddressInfo).address, port: (a as AddressInfo).port };
  }

  async start(): Promise<void> {
    for (const [path, url, type] of ASSET_FILES) {
      const body = await readFile(url).catch((err: unknown) => {
        throw new RelayError(ErrorCodes.LISTEN, `dashboard: cannot read ${url.pathname} (was it built?)`, { cause: err });
      });
      this.assets.set(path, { type, body });
    }
    const server = http.createServer({ maxHeaderSize: this.limits.maxHeaderBytes }, (req, res) => this.handle(req, res));
    server.headersTimeout = this.limits.headersTimeoutMs;
    server.keepAliveTimeout = this.limits.keepAliveTimeoutMs;
    // Streams last as long as the page is open; the request timeout would cut them.
    server.requestTimeout = 0;
    server.maxConnections = this.limits.maxConnections;
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      else socket.destroy();
    });
    this.server = server;
    const { host, port } = this.options;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: NodeJS.ErrnoException) => {
      this.server = null;
      throw new RelayError(ErrorCodes.LISTEN, `dashboard ${host}:${port}: cannot listen (${err.code ?? 'error'})`, {
        cause: err,
        details: { errno: err.code ?? 'error' },
      });
    });
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server === null) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const res of this.responses) res.end();
    server.closeAllConnections();
    await closed;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
    if (this.expected !== null) {
      if (!authorized(req.headers.authorization, this.expected)) {
        res.setHeader('www-authenticate', 'Basic realm="relay dashboard", charset="UTF-8"');
        return sendText(res, 401, 'this dashboard needs its token (the password of Basic auth, or a Bearer token)\n');
      }
    } else if (!localHost(req.headers.host)) {
      return sendText(res, 421, 'this dashboard answers only to an IP address or localhost in the Host header; give it a token to serve other names\n');
    }
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return sendText(res, 405, 'the dashboard is read-only\n');
    }
    const url = new URL(req.url ?? '/', 'http://dashboard');
    const path = url.pathname === '/index.html' ? '/' : url.pathname;
    const asset = this.assets.get(path);
    if (asset !== undefined) return send(res, 200, asset.type, asset.body);
    if (path === '/api/state') return this.state(req, res);
    if (path === '/api/events') return this.stream(req, res, url);
    // Browsers ask for it on their own; an empty answer keeps their consoles quiet.
    if (path === '/favicon.ico') return void res.writeHead(204).end();
    return sendText(res, 404, `no page ${path}\n`);
  }

  /** The state of a big white is mostly the same keys again and again: gzip takes it to a
   *  tenth or less, for a browser on a slow link. */
  private state(req: http.IncomingMessage, res: http.ServerResponse): void {
    const body = Buffer.from(JSON.stringify(this.feed.full()));
    res.setHeader('vary', 'accept-encoding');
    if (body.length < GZIP_MIN_BYTES || !/\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
      return send(res, 200, 'application/json; charset=utf-8', body);
    }
    // On libuv's thread pool: the white's event loop carries the tunnel meanwhile.
    gzip(body, (err, packed) => {
      if (err !== null) {
        this.options.logger.warn({ err }, 'dashboard: gzip failed; sending the state as it is');
        return send(res, 200, 'application/json; charset=utf-8', body);
      }
      res.setHeader('content-encoding', 'gzip');
      send(res, 200, 'application/json; charset=utf-8', packed);
    });
  }

  private stream(req: http.IncomingMessage, res: http.ServerResponse, url: URL): void {
    if (this.feed.streams >= this.limits.maxStreams) {
      res.setHeader('retry-after', '10');
      return sendText(res, 503, `already ${this.limits.maxStreams} live pages open; close one\n`);
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      // nginx would otherwise hold the stream back in its buffer.
      'x-accel-buffering': 'no',
    });
    if (req.method === 'HEAD') return void res.end();
    res.write('retry: 2000\n\n');
    const lastEventId = req.headers['last-event-id'];
    const since = typeof lastEventId === 'string' ? lastEventId : url.searchParams.get('since');
    this.responses.add(res);
    const subscription = this.feed.subscribe(
      {
        write: (text) => res.write(text),
        close: () => res.destroy(),
      },
      since,
    );
    res.on('drain', () => subscription.drained());
    res.once('close', () => {
      this.responses.delete(res);
      subscription.close();
    });
  }
}

function send(res: http.ServerResponse, status: number, type: string, body: Buffer): void {
  res.writeHead(status, { 'content-type': type, 'content-length': body.length });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function sendText(res: http.ServerResponse, status: number, text: string): void {
  send(res, status, 'text/plain; charset=utf-8', Buffer.from(text));
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Basic (any user name, the token as password) or Bearer; compared as digests, in constant time. */
function authorized(header: string | undefined, expected: Buffer): boolean {
  const match = /^(Basic|Bearer) +(\S+) *$/i.exec(header ?? '');
  if (!match) return false;
  let token = match[2]!;
  if (match[1]!.toLowerCase() === 'basic') {
    const decoded = Buffer.from(token, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    token = decoded.slice(colon + 1);
  }
  return timingSafeEqual(digest(token), expected);
}

/** The Host header names an IP address or localhost (with any port). */
function localHost(header: string | undefined): boolean {
  if (header === undefined) return false;
  const host = header.startsWith('[') ? header.slice(1, header.indexOf(']')) : header.replace(/:[0-9]*$/, '');
  return host.toLowerCase() === 'localhost' || isIP(host) !== 0;
}
