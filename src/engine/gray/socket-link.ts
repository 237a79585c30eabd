// A pooled data connection on a Node socket: the JS plane's (with an engine, engine-link.ts).
import net from 'node:net';
import type { GrayService } from '../../config/types.js';
import { tuneDataSocket } from '../substrate/data-plane.js';
import type { PairEnd } from '../substrate/pair.js';
import { resetSocket } from '../net-util.js';
import { START_HEADER_BYTES, type ClientAddressInfo } from '../protocol/start-header.js';
import { forwardToTarget } from './forwarder.js';
import type { Forward, LinkContext, LinkEvents, OpenLink, PoolLink } from './pool-link.js';

export function socketLinks(ctx: LinkContext, host: string): OpenLink {
  return (preamble, events) => new SocketLink(ctx, host, preamble, events);
}

class SocketLink implements PoolLink {
  private readonly socket: net.Socket;
  /** What arrived behind the start header: the client's first bytes. */
  private rest: Buffer = Buffer.alloc(0);

  constructor(
    private readonly ctx: LinkContext,
    host: string,
    preamble: Buffer,
    events: LinkEvents,
  ) {
    const socket = net.connect({ host, port: ctx.port, allowHalfOpen: true });
    this.socket = socket;
    let connected = false;
    let activated = false;
    let header: Buffer = Buffer.alloc(0);
    socket.on('error', (err) => {
      if (!connected) events.failed(err);
      socket.destroy();
    });
    socket.once('connect', () => {
      connected = true;
      tuneDataSocket(socket, ctx.config.limits.keepAliveDelayMs);
      socket.write(preamble);
      events.connected();
    });
    const onData = (chunk: Buffer): void => {
      header = header.length === 0 ? chunk : Buffer.concat([header, chunk]);
      if (header.length < START_HEADER_BYTES) return;
      socket.off('data', onData);
      activated = true;
      this.rest = header.subarray(START_HEADER_BYTES);
      events.activated(header.subarray(0, START_HEADER_BYTES));
    };
    socket.on('data', onData);
    // The socket is allowHalfOpen (for forwarding), so the white's FIN on an idle connection it
    // recycled would leave ours open in CLOSE-WAIT. Before activation a FIN means it is over.
    socket.once('end', () => {
      if (!activated) socket.destroy();
    });
    socket.once('close', () => {
      if (connected && !activated) events.closed();
    });
  }

  forward(client: ClientAddressInfo, service: GrayService, onClosed: (result: PairEnd | null) => void): Forward {
    const { config, logger, warnings, serviceUnreachable } = this.ctx;
    return forwardToTarget(this.socket, client, this.rest, service, config, logger, warnings, onClosed, serviceUnreachable);
  }

  /** Reset, not FIN: once activated, the white's client must hear an abort (an invalid start
   *  header), and an idle one is gone for the white either way. */
  destroy(): void {
    resetSocket(this.socket);
  }
}
