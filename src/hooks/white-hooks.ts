// Everything hook-shaped the white runs, composed once: the webhook dispatcher (the engine's
// EventSink) and the optional authorize hook (the engine's login and client gates). The engine
// holds gate functions that call through `this`, so a reload can swap the authorizer without
// rebuilding the server.
import type { WhiteConfig } from '../config/types.js';
import type { WhiteGates } from '../engine/white/white-server.js';
import type { Logger } from '../log.js';
import { Authorizer } from './authorize.js';
import { HookDispatcher } from './dispatcher.js';
import type { EventName, EventPayloads, EventSink } from './events.js';
import type { WebhookStats } from './webhook.js';

export class WhiteHooks implements EventSink {
  private readonly dispatcher: HookDispatcher;
  private authorizer: Authorizer;
  private authorizeConfig: WhiteConfig['authorize'];

  constructor(
    config: WhiteConfig,
    private readonly logger: Logger,
  ) {
    this.dispatcher = new HookDispatcher(config.hooks, config.limits, logger);
    this.authorizeConfig = config.authorize;
    this.authorizer = new Authorizer(config.authorize, logger);
  }

  emit<E extends EventName>(name: E, payload: EventPayloads[E]): void {
    this.dispatcher.emit(name, payload);
  }

  /** Gates for the engine: each answers null at once while its kind is off, so the engine pays
   *  nothing for a hook nobody configured. */
  gates(): WhiteGates {
    return {
      grayLogin: (grayId, remoteAddress) =>
        this.authorizer.enabled('gray_login') ? this.authorizer.decide({ kind: 'gray_login', grayId, remoteAddress }) : null,
      clientConnect: (grayId, remoteAddress) =>
        this.authorizer.enabled('client_connect') ? this.authorizer.decide({ kind: 'client_connect', grayId, remoteAddress }) : null,
    };
  }

  update(config: WhiteConfig): void {
    this.dispatcher.update(config.hooks);
    if (JSON.stringify(config.authorize) !== JSON.stringify(this.authorizeConfig)) {
      const old = this.authorizer;
      this.authorizer = new Authorizer(config.authorize, this.logger);
      this.authorizeConfig = config.authorize;
      void old.close();
    }
  }

  stats(): WebhookStats[] {
    return this.dispatcher.stats();
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
    await this.authorizer.close();
  }
}
