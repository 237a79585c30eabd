// The gray's pool with an engine: the engine dials the pool's data connections itself from a
// session's stock (substrate/dial-stock.ts), one per credit, each with a preamble it signs, and
// the successor of each the moment its start header is in. Activated, a connection is forwarded: joined with a connection
// to the client's service that the engine opens itself; for a service without a PROXY header
// the engine does even that on its own as the start header arrives, by the session's service
// table (routes, set by the agent), so a client crosses the gray with no JavaScript. The
// white's data host and the services are IP addresses here (the agent resolves names).
import { formatHostPort } from '../../config/address.js';
import type { GrayService } from '../../config/types.js';
import type { Engine } from '../substrate/engine.js';
import { DialedConn, type Endpoint } from '../substrate/dialed-conn.js';
import { DialStock } from '../substrate/dial-stock.js';
import type { PairEnd } from '../substrate/pair.js';
import { proxyHeaderFor } from '../protocol/proxy-protocol.js';
import { START_HEADER_BYTES, decodeStartHeader, type ClientAddressInfo, type StartHeaderFields } from '../protocol/start-header.js';
import { warnTargetFailed } from './forwarder.js';
import type { Forward, LinkContext, OpenStock, PoolLink } from './pool-link.js';

/** The TCP keepalive of the gray's connections, in whole seconds for the engine. */
export function keepAliveSecOf(ctx: Pick<LinkContext, 'config'>): number {
  return Math.max(1, Math.round(ctx.config.limits.keepAliveDelayMs / 1000));
}

/** The connection to a local service gets no keepalive (no-delay only, as Node's net.connect
 *  on the JS plane): it is local, and the config's keepalive is the pooled connections'. */
export const SERVICE_KEEPALIVE_SEC = 0;

/** dataIp: the white's data host as an IP address; routes: the session's service table in the
 *  engine (Engine.handle.setRoutes). */
export function engineStock(engine: Engine, ctx: LinkContext, dataIp: string, routes: number): OpenStock {
  const white: Endpoint = { ip: dataIp, port: ctx.port, keepAliveSec: keepAliveSecOf(ctx) };
  return (keys, events) => {
    const stock = new DialStock(engine, white, keys, START_HEADER_BYTES, {
      onConnected: () => events.connected(),
      onFailed: (error) => events.failed(error),
      onClosed: () => events.closed(),
      onHeld: (conn, header, credit) => events.activated(new EngineLink(ctx, DialedConn.held(engine, conn, () => {}), () => events.reused()), header, credit),
      onForwarded: (forwarded) => events.forwarded(forwarded),
      onReused: () => events.reused(),
      onPairEnd: (pair, end, reachedService, header) => {
        if (!reachedService && end.error) {
          const client = clientOf(header);
          const service = client ? ctx.serviceAt?.(client.service) : undefined;
          serviceFailed(ctx, service ? targetOf(ctx, service) : null, client, end.error);
        }
        events.pairEnded(pair, end);
      },
    }, routes);
    return {
      add: (firstCounter, count, credits) => stock.add(firstCounter, count, credits),
      release: () => stock.release(),
      close: () => stock.close(),
      destroyPair: (pair) => engine.handle.destroy(pair),
    };
  };
}

/** Where a service is dialed: its target as the IP address resolved for it. */
function targetOf(ctx: LinkContext, service: GrayService): Endpoint {
  return { ip: ctx.targetIp?.(service) ?? service.target.host, port: service.target.port, keepAliveSec: SERVICE_KEEPALIVE_SEC };
}

/** A forward whose connect to the service failed: counted, and logged with its client (and its
 *  target, unless the service left the session's table meanwhile). */
function serviceFailed(ctx: LinkContext, to: Endpoint | null, client: ClientAddressInfo | null, error: Error): void {
  ctx.serviceUnreachable?.();
  warnTargetFailed(ctx.warnings, to ? { host: to.ip, port: to.port } : null, client, error);
}

/** The client of a start header the engine forwarded (well formed, so this decodes it; a header
 *  the decoder still refuses is logged without its client). */
function clientOf(header: Buffer | null): StartHeaderFields | null {
  try {
    return header ? decodeStartHeader(header, true) : null;
  } catch {
    return null;
  }
}

class EngineLink implements PoolLink {
  constructor(
    private readonly ctx: LinkContext,
    private readonly conn: DialedConn,
    /** The forward ended and its framed connection waits for the next start header. */
    private readonly onReused: () => void,
  ) {}

  forward(client: ClientAddressInfo, service: GrayService, onClosed: (result: PairEnd | null) => void): Forward {
    let markClosed = (): void => {};
    const closed = new Promise<void>((resolve) => (markClosed = resolve));
    const to = targetOf(this.ctx, service);
    // Forwarded by the engine already (its route): no head can go to the service any more.
    const head = this.conn.forwardedByEngine ? undefined : proxyHeaderFor(service.proxyProtocol, client);
    const pair = this.conn.forward(to, head, (result, reachedService, reused) => {
      if (reused) this.onReused();
      // A pair ended by destroy() (a drain) has no error: only a failed connect is reported.
      if (!reachedService && result.error) serviceFailed(this.ctx, to, client, result.error);
      onClosed(result);
      markClosed();
    });
    this.ctx.logger.debug({ client: formatHostPort({ host: client.srcAddress, port: client.srcPort }), service: service.name }, 'forwarding');
    return { closed, destroy: () => pair.destroy() };
  }

  destroy(): void {
    this.conn.destroy();
  }
}
