// The gray's pool with an engine: the engine dials the pool's data connections itself from a
// stock of preambles (substrate/dial-stock.ts), one per credit, and the successor of each the
// moment its start header is in. Activated, a connection is forwarded: joined with a connection
// to the service that the engine opens itself; without a PROXY header the engine does even that
// on its own as the start header arrives, so a client crosses the gray with no JavaScript. The
// white's data host and the service are IP addresses here (the agent resolves names).
import { formatHostPort } from '../../config/address.js';
import type { Engine } from '../substrate/engine.js';
import { DialedConn, type Endpoint } from '../substrate/dialed-conn.js';
import { DialStock } from '../substrate/dial-stock.js';
import type { PairEnd } from '../substrate/pair.js';
import { PREAMBLE_BYTES } from '../protocol/preamble.js';
import { proxyHeaderFor } from '../protocol/proxy-protocol.js';
import { START_HEADER_BYTES, decodeStartHeader, type ClientAddressInfo } from '../protocol/start-header.js';
import { warnTargetFailed } from './forwarder.js';
import type { Forward, LinkContext, OpenStock, PoolLink } from './pool-link.js';

/** dataIp, serviceIp: the white's data host and the service as IP addresses. */
export function engineStock(engine: Engine, ctx: LinkContext, dataIp: string, serviceIp: string): OpenStock {
  const keepAliveSec = Math.max(1, Math.round(ctx.config.limits.keepAliveDelayMs / 1000));
  const white: Endpoint = { ip: dataIp, port: ctx.port, keepAliveSec };
  const service: Endpoint = { ip: serviceIp, port: ctx.config.target.port, keepAliveSec };
  // Without a PROXY header to write first, the engine forwards to the service the moment the
  // start header is in; JavaScript then only takes charge of the pair (forward, below).
  const forwardTo = ctx.config.proxyProtocol === 'none' ? service : undefined;
  return (events) => {
    const stock = new DialStock(engine, white, PREAMBLE_BYTES, START_HEADER_BYTES, {
      onConnected: (id) => events.connected((linkEvents) => new EngineLink(ctx, service, DialedConn.adopt(engine, id, {
        onConnected: () => {},
        onFailed: () => {},
        onPrefix: (header) => linkEvents.activated(header),
        onClosed: () => linkEvents.closed(),
        onForwarded: (header, pair) => linkEvents.forwarded!(header, pair),
      }))),
      onFailed: (error) => events.failed(error),
      onPairEnd: (pair, end, reachedService, header) => {
        if (!reachedService && end.error) serviceFailed(ctx, service, clientOf(header), end.error);
        events.pairEnded(pair, end);
      },
    }, forwardTo);
    return {
      add: (preambles, credits) => stock.add(preambles, credits),
      release: () => stock.release(),
      close: () => stock.close(),
      destroyPair: (pair) => engine.handle.destroy(pair),
    };
  };
}

/** A forward whose connect to the service failed: counted, and logged with its client. */
function serviceFailed(ctx: LinkContext, service: Endpoint, client: ClientAddressInfo | null, error: Error): void {
  ctx.serviceUnreachable?.();
  warnTargetFailed(ctx.warnings, { host: service.ip, port: service.port }, client, error);
}

/** The client of a start header the engine forwarded (well formed, so this decodes it; a header
 *  the decoder still refuses is logged without its client). */
function clientOf(header: Buffer | null): ClientAddressInfo | null {
  try {
    return header ? decodeStartHeader(header) : null;
  } catch {
    return null;
  }
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
    const pair = this.conn.forward(this.service, proxyHeaderFor(this.ctx.config.proxyProtocol, client), (result, reachedService) => {
      // A pair ended by destroy() (a drain) has no error: only a failed connect is reported.
      if (!reachedService && result.error) serviceFailed(this.ctx, this.service, client, result.error);
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
