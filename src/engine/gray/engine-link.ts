// A pooled data connection an engine dials and holds (substrate/dialed-conn.ts). Activated, it
// is forwarded: joined with a connection to the client's service that the engine opens itself,
// so a client costs the gray's JavaScript one event and one call, and no socket object; for a
// service without a PROXY header the engine does even that on its own as the start header
// arrives, by the session's service table (routes, set by the agent). The white's data host
// and the services are IP addresses here (the agent resolves names).
import { formatHostPort } from '../../config/address.js';
import type { GrayService } from '../../config/types.js';
import type { Engine } from '../substrate/engine.js';
import { DialedConn, type Endpoint } from '../substrate/dialed-conn.js';
import type { PairEnd } from '../substrate/pair.js';
import { proxyHeaderFor } from '../protocol/proxy-protocol.js';
import { START_HEADER_BYTES, type ClientAddressInfo } from '../protocol/start-header.js';
import { warnTargetFailed } from './forwarder.js';
import type { Forward, LinkContext, OpenLink, PoolLink } from './pool-link.js';

/** The TCP keepalive of the gray's connections, in whole seconds for the engine. */
export function keepAliveSecOf(ctx: Pick<LinkContext, 'config'>): number {
  return Math.max(1, Math.round(ctx.config.limits.keepAliveDelayMs / 1000));
}

/** dataIp: the white's data host as an IP address; routes: the session's service table in the
 *  engine (Engine.handle.setRoutes). */
export function engineLinks(engine: Engine, ctx: LinkContext, dataIp: string, routes: number): OpenLink {
  const white: Endpoint = { ip: dataIp, port: ctx.port, keepAliveSec: keepAliveSecOf(ctx) };
  return (preamble, events) => new EngineLink(ctx, new DialedConn(engine, white, preamble, START_HEADER_BYTES, {
    onConnected: () => events.connected(),
    onFailed: (error) => events.failed(error),
    onPrefix: (header) => events.activated(header),
    onClosed: () => events.closed(),
  }, routes));
}

class EngineLink implements PoolLink {
  constructor(
    private readonly ctx: LinkContext,
    private readonly conn: DialedConn,
  ) {}

  forward(client: ClientAddressInfo, service: GrayService, onClosed: (result: PairEnd | null) => void): Forward {
    let markClosed = (): void => {};
    const closed = new Promise<void>((resolve) => (markClosed = resolve));
    const to: Endpoint = { ip: this.ctx.targetIp!(service), port: service.target.port, keepAliveSec: keepAliveSecOf(this.ctx) };
    // Forwarded by the engine already (its route): no head can go to the service any more.
    const head = this.conn.forwardedByEngine ? undefined : proxyHeaderFor(service.proxyProtocol, client);
    const pair = this.conn.forward(to, head, (result, reachedService) => {
      // A pair ended by destroy() (a drain) has no error: only a failed connect is reported.
      if (!reachedService && result.error) {
        this.ctx.serviceUnreachable?.();
        warnTargetFailed(this.ctx.warnings, { host: to.ip, port: to.port }, client, result.error);
      }
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
