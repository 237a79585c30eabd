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
  private responseMaxBytes: number;
  private readonly taps: EventSink[] = [];

  constructor(
    config: WhiteConfig,
    private readonly logger: Logger,
  ) {
    this.dispatcher = new HookDispatcher(config.hooks, config.limits, logger);
    this.authorizeConfig = config.authorize;
    this.responseMaxBytes = config.limits.hookResponseMaxBytes;
    this.authorizer = WhiteHooks.authorizerFor(config, logger);
  }

  // The authorize answer is bounded by the same configured limit as webhook answers. Enough
  // keep-alive connections that a burst of new clients does not queue behind a few requests.
  private static authorizerFor(config: WhiteConfig, logger: Logger): Authorizer {
    return new Authorizer(config.authorize, logger, { responseMaxBytes: config.limits.hookResponseMaxBytes, connections: 32 });
  }

  emit<E extends EventName>(name: E, payload: EventPayloads[E]): void {
    this.dispatcher.emit(name, payload);
    for (const tap of this.taps) tap.emit(name, payload);
  }

  /** Asked twice per client: a loop, not a closure per call. */
  wants(name: EventName): boolean {
    if (this.dispatcher.wants(name)) return true;
    for (const tap of this.taps) if (tap.wants?.(name) ?? true) return true;
    return false;
  }

  /** Another consumer of every event (the dashboard). Like emit, its emit must never throw. */
  tap(sink: EventSink): void {
    this.taps.push(sink);
  }

  /** Gates for the engine: each answers null at once while its kind is off, so the engine pays
   *  nothing for a hook nobody configured. */
  gates(): WhiteGates {
    return {
      grayLogin: (grayId, remoteAddress) =>
        this.authorizer.enabled('gray_login') ? this.authorizer.decide({ kind: 'gray_login', grayId, remoteAddress }) : null,
      clientConnect: (grayId, remoteAddress, connectionId) =>
        this.authorizer.enabled('client_connect')
          ? this.authorizer.decide({ kind: 'client_connect', grayId, remoteAddress, ...(connectionId ? { connectionId } : {}) })
          : null,
      clientConnectDeciding: () => this.authorizer.enabled('client_connect'),
    };
  }

  update(config: WhiteConfig): void {
    this.dispatcher.update(config.hooks);
    if (config.limits.hookResponseMaxBytes !== this.responseMaxBytes) {
      // The answer cap is fixed at construction: rebuild.
      const old = this.authorizer;
      this.authorizer = WhiteHooks.authorizerFor(config, this.logger);
      this.responseMaxBytes = config.limits.hookResponseMaxBytes;
      void old.close();
    } else if (!sameAuthorize(config.authorize, this.authorizeConfig)) {
      // Same cap: update in place, so open connections stay warm and decisions in flight finish.
      this.authorizer.update(config.authorize);
    }
    this.authorizeConfig = config.authorize;
  }

  stats(): WebhookStats[] {
    return this.dispatcher.stats();
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
    await this.authorizer.close();
  }
}

/** Field by field: JSON.stringify would not do, since secrets serialize as "[redacted]" and a
 *  changed secret would go unnoticed. */
function sameAuthorize(a: WhiteConfig['authorize'], b: WhiteConfig['authorize']): boolean {
  if (a === null || b === null) return a === b;
  const secretsEqual = a.secret === null || b.secret === null ? a.secret === b.secret : a.secret.equals(b.secret);
  return (
    secretsEqual &&
    a.url === b.url &&
    a.timeoutMs === b.timeoutMs &&
    a.onTimeout === b.onTimeout &&
    a.grayLogin === b.grayLogin &&
    a.clientConnect === b.clientConnect
  );
}
