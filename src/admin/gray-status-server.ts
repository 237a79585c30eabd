// The gray's optional status listener (config `status.listen`): GET /healthz (the process is
// alive), GET /readyz (200 when connected to every white, each with a non-empty pool, else 503, with the
// reason) and GET /metrics. Read only, no authentication: bind it to loopback or a monitoring
// network. Bounded like the white's admin listeners: small headers, short deadlines, few sockets.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HostPort } from '../config/types.js';
import { grayReady, type GrayStatusSource } from '../engine/gray/status.js';
import type { DataPlaneName } from '../engine/substrate/pair.js';
import { ErrorCodes, RelayError } from '../errors.js';
import { renderGrayMetrics } from './gray-metrics.js';
import { METRICS_CONTENT_TYPE } from './metrics-format.js';
import { startProcessMetrics } from './process-metrics.js';

const LIMITS = { maxHeaderBytes: 8 * 1024, requestTimeoutMs: 10_000, headersTimeoutMs: 5_000, keepAliveTimeoutMs: 5_000, maxConnections: 32 } as const;

export class GrayStatusServer {
  private readonly server: http.Server;

  constructor(
    private readonly source: GrayStatusSource,
    private readonly dataPlane: DataPlaneName,
  ) {
    this.server = http.createServer({ maxHeaderSize: LIMITS.maxHeaderBytes }, (req, res) => this.handle(req, res));
    this.server.requestTimeout = LIMITS.requestTimeoutMs;
    this.server.headersTimeout = LIMITS.headersTimeoutMs;
    this.server.keepAliveTimeout = LIMITS.keepAliveTimeoutMs;
    this.server.maxConnections = LIMITS.maxConnections;
  }

  async listen(at: HostPort): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void =>
        reject(new RelayError(ErrorCodes.LISTEN, `status listener ${at.host}:${at.port}: cannot listen (${err.code ?? 'error'})`, { cause: err, details: { errno: err.code ?? 'error' } }));
      this.server.once('error', onError);
      this.server.listen({ host: at.host, port: at.port }, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    startProcessMetrics();
  }

  get address(): HostPort | null {
    const a = this.server.address() as AddressInfo | null;
    return a ? { host: a.address, port: a.port } : null;
  }

  async close(): Promise<void> {
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain; charset=utf-8', 'GET only\n', { allow: 'GET, HEAD' });
    if (path === '/healthz') return send(res, 200, 'text/plain; charset=utf-8', 'ok\n');
    if (path === '/readyz') {
      const status = this.source.status();
      if (grayReady(status)) return send(res, 200, 'text/plain; charset=utf-8', 'ready\n');
      const why = status.whites.map((w) => (w.connected ? `${w.white}: connected, pool empty` : `${w.white}: not connected`)).join('; ');
      return send(res, 503, 'text/plain; charset=utf-8', `not ready: ${why || 'no white configured'}\n`);
    }
    if (path === '/metrics') return send(res, 200, METRICS_CONTENT_TYPE, renderGrayMetrics(this.source.status(), this.dataPlane));
    send(res, 404, 'text/plain; charset=utf-8', `no route ${path}\n`);
  }
}

function send(res: http.ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}
