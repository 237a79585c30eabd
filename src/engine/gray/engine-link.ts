// A pooled data connection an engine dials and holds (substrate/dialed-conn.ts). Activated, it
// is forwarded: joined with a connection to the service that the engine opens itself, so a
// client costs the gray's JavaScript one event and one call, and no socket object; without a
// PROXY header the engine does even that on its own as the start header arrives. The white's
// data host and the service are IP addresses here (the agent resolves names).
import { formatHostPort } from '../../config/address.js';
import type { Engine } from '../substrate/engine.js';
import { DialedConn, type Endpoint } from '../substrate/dialed-conn.js';
import type { PairEnd } from '../substrate/pair.js';
import { proxyHeaderFor } from '../protocol/proxy-protocol.js';
import { START_HEADER_BYTES, type ClientAddressInfo } from '../protocol/start-header.js';
import { warnTargetFailed } from './forwarder.js';
import type { Forward, LinkContext, LinkEvents, OpenLink, PoolLink } from './pool-link.js';

/** dataIp, serviceIp: the white's data host and the service as IP addresses. */
export function engineLinks(engine: Engine, ctx: LinkContext, dataIp: string, serviceIp: string): OpenLink {
  const keepAliveSec = Math.max(1, Math.round(ctx.config.limits.keepAliveDelayMs / 1000));
  const white: Endpoint = { ip: dataIp, port: ctx.port, keepAliveSec };
  const service: Endpoint = { ip: serviceIp, port: ctx.config.services[0]!.target.port, keepAliveSec };
  // Without a PROXY header to write first, the engine forwards to the service the moment the
  // start header is in; JavaScript then only takes charge of the pair (forward, below).
  const forwardTo = ctx.config.services[0]!.proxyProtocol === 'none' ? service : undefined;
  return (preamble, events) => new EngineLink(ctx, service, new DialedConn(engine, white, preamble, START_HEADER_BYTES, {
    onConnected: () => events.connected(),
    onFailed: (error) => events.failed(error),
    onPrefix: (header) => events.activated(header),
    onClosed: () => events.closed(),
  }, forwardTo));
}

class EngineLink implements PoolLink {
  constructor(
    private readonly ctx: LinkContext,
    private readonly service: Endpoint,
    private readonly conn: DialedConn,
  ) {}

  forward(client: ClientAddressInfo, onClosed: (result: PairEnd | null) => void): Forward {
    let markClosed = (): void => {};
    const closed = new Promise<void>((resolve) => (markClosed = resolve));
    const { ip, port } = this.service;
    const pair = this.conn.forward(this.service, proxyHeaderFor(this.ctx.config.services[0]!.proxyProtocol, client), (result, reachedService) => {
      // A pair ended by destroy() (a drain) has no error: only a failed connect is reported.
      if (!reachedService && result.error) {
        this.ctx.serviceUnreachable?.();
        warnTargetFailed(this.ctx.warnings, { host: ip, port }, client, result.error);
      }
      onClosed(result);
      markClosed();
    });
    this.ctx.logger.debug({ client: formatHostPort({ host: client.srcAddress, port: client.srcPort }) }, 'forwarding');
    return { closed, destroy: () => pair.destroy() };
  }

  destroy(): void {
    this.conn.destroy();
  }
}
