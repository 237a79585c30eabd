// The white's status page as one piece for the CLI: the feed (fed by the white's snapshot and
// events) and its HTTP listener. Taken from the config at start, like the admin listeners.
import { formatHostPort, isLoopbackHost } from '../config/address.js';
import type { HostPort, WhiteConfig } from '../config/types.js';
import type { EventSink } from '../hooks/events.js';
import type { Logger } from '../log.js';
import { DashboardFeed, type FeedSource } from './feed.js';
import { DashboardServer } from './server.js';

export class Dashboard {
  private readonly feed: DashboardFeed;
  private readonly server: DashboardServer;

  constructor(
    private readonly config: NonNullable<WhiteConfig['dashboard']>,
    source: FeedSource,
    private readonly logger: Logger,
  ) {
    this.feed = new DashboardFeed(source);
    this.server = new DashboardServer({ ...config, logger }, this.feed);
  }

  /** Where the white's events go for the page; hand it over before the white starts. */
  get events(): EventSink {
    return this.feed;
  }

  get address(): HostPort | null {
    return this.server.address;
  }

  /** After the white has started (the feed's first snapshot is taken here). */
  async start(): Promise<void> {
    this.feed.start();
    try {
      await this.server.start();
    } catch (err) {
      this.feed.stop();
      throw err;
    }
    const at = this.server.address!;
    this.logger.info({ url: `http://${formatHostPort(at)}/` }, 'dashboard listening');
    if (!isLoopbackHost(this.config.host)) {
      this.logger.warn({ listen: formatHostPort(this.config) }, 'dashboard reachable from other machines over plain HTTP: its token crosses the network in clear; put TLS in front (docs/dashboard.md)');
    }
  }

  async close(): Promise<void> {
    this.feed.stop();
    await this.server.close();
  }
}
