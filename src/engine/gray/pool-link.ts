// One pooled data connection as the pool dialer sees it, whichever plane opens it: a connection
// an engine dials and holds (engine-link.ts), or a Node socket on the JS plane (socket-link.ts).
// The dialer owns the counters and credits; a link only connects, writes its preamble, waits
// for the white's start header and, once activated, forwards to the local service.
import type { GrayConfig, GrayService } from '../../config/types.js';
import type { Logger } from '../../log.js';
import type { RateLimitedLog } from '../../rate-limited-log.js';
import type { PairEnd } from '../substrate/pair.js';
import type { ClientAddressInfo } from '../protocol/start-header.js';

export interface LinkEvents {
  /** Connected and the preamble written: the link is idle in the pool. */
  connected(): void;
  /** The connection could not be made and nothing was sent: its counter is unspent. */
  failed(error: Error): void;
  /** The white wrote the start header (exactly START_HEADER_BYTES): forward it now. */
  activated(header: Buffer): void;
  /** Closed before activation: the white recycled it, or the path broke. */
  closed(): void;
}

export interface PoolLink {
  /** Connects an activated link to the client's service and joins the two. */
  forward(client: ClientAddressInfo, service: GrayService, onClosed: (result: PairEnd | null) => void): Forward;
  destroy(): void;
}

/** Opens one link to the white's data port with this preamble. Events come asynchronously. */
export type OpenLink = (preamble: Buffer, events: LinkEvents) => PoolLink;

/** What every link needs besides its preamble. */
export interface LinkContext {
  readonly config: GrayConfig;
  readonly logger: Logger;
  readonly warnings: RateLimitedLog;
  /** The white's data port. */
  readonly port: number;
  /** With an engine: a service's target as the IP address resolved for it. */
  readonly targetIp?: (service: GrayService) => string;
  /** Counts a forward whose connect to the local service failed. */
  readonly serviceUnreachable?: () => void;
}

/** One client being forwarded, from activation until both sides closed. */
export interface Forward {
  readonly closed: Promise<void>;
  destroy(): void;
}
