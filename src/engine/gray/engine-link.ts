// A pooled data connection the native engine dials and holds (engine-dial.ts). Activated, it is
// joined with a connection to the service that the engine opens itself, so a client costs the
// gray's JavaScript one event and one call, and no socket object; without a PROXY header the
// engine does even that on its own as the start header arrives. Needs IP addresses for the
// white's data host and the service: the engine does not resolve names.
import { ErrorCodes } from '../../errors.js';
import { DialedConn, type Endpoint } from '../data-plane/engine-dial.js';
import type { PairResult } from '../data-plane/joined-pair.js';
import { proxyHeaderFor } from '../protocol/proxy-protocol.js';
import { START_HEADER_BYTES, type ClientAddressInfo } from '../protocol/start-header.js';
import type { Forward, LinkContext, LinkEvents, OpenLink, PoolLink } from './pool-link.js';

/** dataIp: the white's data host as an IP address; the service's host must be one too. */
export function engineLinks(ctx: LinkContext, dataIp: string): OpenLink {
  const keepAliveSec = Math.max(1, Math.round(ctx.config.limits.keepAliveDelayMs / 1000));
  const white: Endpoint = { ip: dataIp, port: ctx.port, keepAliveSec };
  const service: Endpoint = { ip: ctx.config.target.host, port: ctx.config.target.port, keepAliveSec };
  // Without a PROXY header to write first, the engine forwards to the service the moment the
  // start header is in; JavaScript then only takes charge of the pair (forward, below).
  const forwardTo = ctx.config.proxyProtocol === 'none' ? service : undefined;
  return (preamble, events) => new EngineLink(ctx, service, DialedConn.open(white, preamble, START_HEADER_BYTES, {
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

  forward(client: ClientAddressInfo, onClosed: (result: PairResult | null) => void): Forward {
    let markClosed = (): void => {};
    const closed = new Promise<void>((resolve) => (markClosed = resolve));
    const { ip, port } = this.service;
    const pair = this.conn.connectJoin(this.service, proxyHeaderFor(this.ctx.config.proxyProtocol, client), (result, reachedService) => {
      // A pair ended by destroy() (a drain) has no error: only a failed connect is reported.
      if (!reachedService && result.error) {
        this.ctx.serviceUnreachable?.();
        this.ctx.warnings.warn(
          'target',
          { code: ErrorCodes.TARGET_UNREACHABLE, target: `${ip}:${port}`, client: `${client.srcAddress}:${client.srcPort}`, detail: result.error.message },
          'local service unreachable',
        );
      }
      onClosed(result);
      markClosed();
    });
    this.ctx.logger.debug({ client: `${client.srcAddress}:${client.srcPort}` }, 'forwarding');
    return { closed, destroy: () => pair.destroy() };
  }

  destroy(): void {
    this.conn.destroy();
  }
}
