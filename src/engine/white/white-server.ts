// The white server: one shared TLS control port, one GrayEndpoint (port pair + pool broker) per
// configured gray, the live session of each gray, and the apply step of config reloads (only
// what changed is touched). Everything the outside needs (CLI, admin API, tests) goes through
// this class's small surface: start, applyConfig, snapshot, stop.
import tls from 'node:tls';
import type { GrayEntry, WhiteConfig } from '../../config/types.js';
import { ErrorCodes, RelayError, type ErrorCode } from '../../errors.js';
import { NULL_EVENT_SINK, type EventSink } from '../../hooks/events.js';
import type { Logger } from '../../log.js';
import { formatHostPort } from '../../config/address.js';
import { deepEqual } from '../../config/diff.js';
import type { Limits } from '../../limits.js';
import { MESSAGE_LIMITS, MessageType } from '../protocol/messages.js';
import { sessionIdToString } from '../protocol/preamble.js';
import { RateLimitedLog } from '../../rate-limited-log.js';
import { resolveHost } from '../net-util.js';
import type { DataPlane } from '../substrate/data-plane.js';
import type { WhiteCounters, WhiteSnapshot } from '../stats.js';
import { createInMemoryIdentity, type InMemoryIdentity } from '../tls-cert.js';
import { Admission } from './admission.js';
import { ControlServer, type AuthenticatedGray } from './control-server.js';
import { GrayEndpoint } from './gray-endpoint.js';
import type { IntakePorts } from './port-intake.js';
import { GraySession } from './gray-session.js';
import type { Gate } from './pool-broker.js';

export interface WhiteGates {
  readonly grayLogin: Gate | null;
  readonly clientConnect: Gate | null;
  /** Whether clientConnect decides anything now (an authorize hook may come and go with a
   *  reload); while it does, no connection is lent to the engine (pool-broker.ts). Without
   *  it, a clientConnect gate is taken to decide always. */
  readonly clientConnectDeciding?: () => boolean;
}

export interface WhiteServerDeps {
  /** This process's data plane (openDataPlane, once at startup). */
  readonly dataPlane: DataPlane;
  readonly logger: Logger;
  readonly events?: EventSink;
  readonly gates?: WhiteGates;
  /** Extra rows for the snapshot (webhook delivery stats live outside the engine). */
  readonly hookStats?: () => WhiteSnapshot['hooks'];
}

export interface ApplyResult {
  readonly added: string[];
  readonly removed: string[];
  readonly changed: string[];
  /** What the white does not run as the new config says, one "key: why" line each: a setting
   *  that needs a restart, a port that cannot be bound yet (retried), a control address that
   *  could not be had. Empty when all of it is applied. */
  readonly notApplied: string[];
}

export class WhiteServer {
  private config: WhiteConfig;
  private identity: InMemoryIdentity | null = null;
  private control: ControlServer | null = null;
  private readonly endpoints = new Map<string, GrayEndpoint>();
  private readonly sessions = new Map<string, GraySession>();
  private readonly events: EventSink;
  private readonly warnings: RateLimitedLog;
  private readonly startedAt = Date.now();
  private stopping = false;
  /** The limits everything running reads at each use; a reload updates this object in place. */
  private readonly limits: Limits;
  /** Where the control port really listens (a reload may fail to move it). */
  private controlAddress: WhiteConfig['control'];
  /** The bind address as configured (endpoints hold it resolved) that the grays' ports use. */
  private runningBind: string;
  /** The config at start: what the settings that need a restart still run with. */
  private readonly startConfig: WhiteConfig;
  readonly counters: WhiteCounters = {
    authFailures: 0,
    dataRejections: {},
    controlRejections: {},
    reloads: { ok: 0, rejected: 0 },
    lastReload: null,
  };

  constructor(
    config: WhiteConfig,
    private readonly deps: WhiteServerDeps,
  ) {
    this.config = config;
    this.limits = { ...config.limits };
    this.controlAddress = config.control;
    this.startConfig = config;
    this.runningBind = config.bind;
    this.events = deps.events ?? NULL_EVENT_SINK;
    this.warnings = new RateLimitedLog(deps.logger);
  }

  get fingerprint(): string {
    return this.identity?.fingerprint256 ?? '';
  }

  get controlPort(): number {
    return this.control?.port ?? 0;
  }

  get dataPlane(): DataPlane {
    return this.deps.dataPlane;
  }

  get currentConfig(): WhiteConfig {
    return this.config;
  }

  /** Bound ports of a gray (tests and the demo ask for port 0). */
  portsOf(id: string): IntakePorts | undefined {
    return this.endpoints.get(id)?.ports;
  }

  async start(): Promise<void> {
    const { logger } = this.deps;
    this.identity = await createInMemoryIdentity();
    const secureContext = tls.createSecureContext({
      key: this.identity.keyPem,
      cert: this.identity.certPem,
      minVersion: 'TLSv1.3',
    });
    const limits = this.limits;
    this.control = new ControlServer({
      secureContext,
      limits,
      admission: new Admission(limits),
      logger,
      warnings: this.warnings,
      lookup: (id) => this.config.grays.find((g) => g.id === id),
      gate: this.deps.gates?.grayLogin ?? null,
      onAuthenticated: (gray) => this.onAuthenticated(gray),
      onAuthFailed: (id, ip) => {
        this.counters.authFailures += 1;
        this.events.emit('gray.auth_failed', { grayId: id, remoteAddress: ip });
      },
      countRejection: (reason) => bump(this.counters.controlRejections, reason),
    });
    // A gray whose ports cannot be bound does not stop the others (its endpoint retries).
    for (const entry of this.config.grays) await this.addEndpoint(entry);
    try {
      await this.control.listen(this.config.control.host, this.config.control.port);
    } catch (err) {
      // Without its control port the white cannot serve anyone: let go of what is bound.
      for (const e of this.endpoints.values()) e.close(true);
      this.endpoints.clear();
      throw err;
    }
    logger.info(
      {
        control: formatHostPort({ host: this.config.control.host, port: this.control.port }),
        fingerprint: this.identity.fingerprint256,
        grays: [...this.endpoints.values()].map((e) => ({ id: e.entry.id, ...e.ports, ...(e.stats.listenError === null ? {} : { error: e.stats.listenError }) })),
      },
      'listening',
    );
  }

  /**
   * Apply a new, already validated config: settings that everything running reads at each use
   * (limits, data_source_check) take effect at once; the control port moves; added grays get
   * their port pair, removed ones are closed with their session and clients, changed ones are
   * moved (ports, bind address) or logged out (secret), unchanged ones are not touched at all.
   * What cannot be applied is returned in notApplied, never skipped in silence.
   */
  async applyConfig(next: WhiteConfig): Promise<ApplyResult> {
    // Diff the grays against what is really running (not the previous config), so a gray whose
    // apply failed last time is simply tried again.
    const before = new Map([...this.endpoints].map(([id, e]) => [id, e.entry]));
    const after = new Map(next.grays.map((g) => [g.id, g]));
    const result: ApplyResult = { added: [], removed: [], changed: [], notApplied: [] };
    this.config = next;
    Object.assign(this.limits, next.limits);
    if (!sameAddress(this.controlAddress, next.control) && this.control) {
      try {
        await this.control.rebind(next.control.host, next.control.port);
        this.controlAddress = next.control;
        this.deps.logger.info({ control: formatHostPort({ host: next.control.host, port: this.control.port }) }, 'control port moved');
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err);
        result.notApplied.push(`control.listen: ${why}; the control port stays on ${formatHostPort(this.controlAddress)}`);
        // Tried again at the next reload: the next diff starts from the running address.
      }
    }
    for (const [id] of before) {
      if (!after.has(id)) {
        await this.removeEndpoint(id, new RelayError(ErrorCodes.GRAY_REMOVED, `gray ${id} was removed from the config`), true);
        result.removed.push(id);
      }
    }
    for (const [id, entry] of after) {
      const old = before.get(id);
      if (!old) {
        await this.addEndpoint(entry);
        result.added.push(id);
        continue;
      }
      // A service's public port is opened or closed in place (servicesChanged): only the data
      // port moves the whole gray.
      const portsChanged = old.dataPort !== entry.dataPort;
      const bindChanged = next.bind !== this.runningBind;
      const secretChanged = !old.secret.equals(entry.secret);
      const settingsChanged = (old.idleTimeoutMs ?? null) !== (entry.idleTimeoutMs ?? null) || !deepEqual(old.services, entry.services);
      if (!portsChanged && !bindChanged && !secretChanged && !settingsChanged) continue;
      result.changed.push(id);
      if (portsChanged || bindChanged) {
        // Moving a gray: its existing clients keep their sockets; its session must reconnect to
        // learn the new data port.
        await this.removeEndpoint(id, new RelayError(ErrorCodes.GRAY_REMOVED, `${portsChanged ? 'ports' : 'bind address'} of gray ${id} changed`), false);
        await this.addEndpoint(entry);
      } else {
        // Logins are checked against the live config, so the new secret is already in force;
        // the session proven with the old one must go. Ports and clients stay. (An idle timeout
        // is read from the entry at each check, so replacing the entry applies it.)
        if (secretChanged) this.endSession(id, new RelayError(ErrorCodes.GRAY_REMOVED, `secret of gray ${id} changed`));
        const error = await this.endpoints.get(id)?.replaceEntry(entry);
        if (error) result.notApplied.push(`grays[${id}].services: ${error}`);
      }
    }
    this.runningBind = next.bind;
    const fixed = new Map<string, string[]>();
    for (const e of this.endpoints.values()) {
      for (const key of e.settingsChanged()) fixed.set(key, [...(fixed.get(key) ?? []), e.entry.id]);
      if (e.stats.listenError !== null) result.notApplied.push(`grays[${e.entry.id}]: ${e.stats.listenError}; retrying`);
    }
    for (const [key, ids] of fixed) {
      result.notApplied.push(`${key}: the native engine's listeners of ${ids.join(', ')} keep the value they were bound with; restart the white to apply it to them`);
    }
    // Against the start, not the previous reload: until a restart they still differ.
    for (const [key, why] of RESTART_NEEDED) if (!deepEqual(this.startConfig[key], next[key])) result.notApplied.push(why);
    return result;
  }

  private clientGateDeciding(): () => boolean {
    const gates = this.deps.gates;
    if (!gates?.clientConnect) return () => false;
    return gates.clientConnectDeciding ?? (() => true);
  }

  /** The hooks were reloaded: a gate that now decides takes back what was lent to the engine. */
  gatesChanged(): void {
    for (const e of this.endpoints.values()) e.broker.gatesChanged();
  }

  /** Clients paired so far over the grays configured now (cheap: no snapshot). */
  clientsServed(): number {
    let total = 0;
    for (const e of this.endpoints.values()) total += e.stats.clientsTotal;
    return total;
  }

  /** One gray's readiness for a load balancer's check; undefined when the id is not configured. */
  grayReadiness(id: string): { connected: boolean; poolIdle: number; poolTarget: number } | undefined {
    const e = this.endpoints.get(id);
    return e === undefined ? undefined : { connected: this.sessions.has(id), poolIdle: e.stats.poolIdle, poolTarget: e.stats.poolTarget };
  }

  /** The state as of now: the engine's held bookkeeping events are heard first. */
  snapshot(): WhiteSnapshot {
    this.deps.dataPlane.engine?.catchUp();
    return {
      configPath: this.config.path,
      startedAt: this.startedAt,
      counters: structuredClone(this.counters),
      hooks: this.deps.hookStats?.() ?? [],
      grays: [...this.endpoints.values()].map((e) => {
        const live = e.broker.liveBytes();
        const { publicPorts, ...ports } = e.ports;
        return {
          ...e.stats,
          bytesFromClients: e.stats.bytesFromClients + live.fromClients,
          bytesToClients: e.stats.bytesToClients + live.toClients,
          id: e.entry.id,
          ...ports,
          connected: this.sessions.has(e.entry.id),
          services: e.entry.services.map((s) => {
            const counts = e.broker.serviceStats(s.name);
            const running = live.byService.get(s.name);
            return {
              ...structuredClone(counts),
              name: s.name,
              publicPort: publicPorts[s.name] ?? s.publicPort,
              allow: s.allow.map((c) => c.text),
              bytesFromClients: counts.bytesFromClients + (running?.fromClients ?? 0),
              bytesToClients: counts.bytesToClients + (running?.toClients ?? 0),
            };
          }),
        };
      }),
    };
  }

  /**
   * Graceful stop: stop accepting everywhere, end the control sessions, let active clients
   * finish for up to drainMs, then cut what is left.
   */
  async stop(drainMs = this.config.limits.drainTimeoutMs): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    // The engine's bookkeeping events (clients it joined a moment ago) first, so each is drained.
    this.deps.dataPlane.engine?.catchUp();
    this.control?.close();
    for (const id of [...this.sessions.keys()]) this.endSession(id, new RelayError(ErrorCodes.SHUTDOWN, 'white is shutting down'));
    const endpoints = [...this.endpoints.values()];
    for (const e of endpoints) e.close(false);
    const active = endpoints.reduce((n, e) => n + e.broker.activeCount, 0);
    if (active > 0) {
      this.deps.logger.info({ active, drainMs }, 'draining active clients');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(endpoints.map((e) => e.broker.drained())),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs))),
      ]);
      clearTimeout(timer);
      for (const e of endpoints) e.broker.destroyActive();
    }
    this.endpoints.clear();
    this.deps.logger.info('stopped');
  }

  private async addEndpoint(entry: GrayEntry): Promise<void> {
    const live = (): WhiteConfig => this.config;
    const endpoint = new GrayEndpoint(entry, {
      dataPlane: this.deps.dataPlane,
      bind: await this.bindAddress(entry),
      get dataSourceCheck() {
        return live().dataSourceCheck;
      },
      clientKeepAliveMs: this.config.clientKeepAlive ? this.config.limits.clientKeepAliveDelayMs : 0,
      limits: this.limits,
      logger: this.deps.logger,
      events: this.events,
      warnings: this.warnings,
      clientGate: this.deps.gates?.clientConnect ?? null,
      clientGateDeciding: this.clientGateDeciding(),
      countRejection: (code: ErrorCode) => bump(this.counters.dataRejections, code),
    });
    this.endpoints.set(entry.id, endpoint);
    await endpoint.bind();
  }

  /** The address a gray's ports listen on: an engine takes an IP address, so a host name is
   *  resolved here, at each (re)start of the ports, as Node's listen would resolve it. */
  private async bindAddress(entry: GrayEntry): Promise<string> {
    const bind = this.config.bind;
    if (!this.deps.dataPlane.engine) return bind;
    try {
      return await resolveHost(bind);
    } catch (err) {
      throw new RelayError(ErrorCodes.LISTEN, `cannot listen on ${bind} (the ports of ${entry.id}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }

  private async removeEndpoint(id: string, reason: RelayError, closeClients: boolean): Promise<void> {
    this.endSession(id, reason);
    const endpoint = this.endpoints.get(id);
    if (!endpoint) return;
    this.endpoints.delete(id);
    endpoint.close(closeClients);
  }

  private endSession(id: string, reason: RelayError): void {
    this.sessions.get(id)?.channel.close(reason);
  }

  private onAuthenticated(gray: AuthenticatedGray): void {
    const { entry, channel } = gray;
    const endpoint = this.endpoints.get(entry.id);
    if (!endpoint || this.stopping) {
      channel.close(new RelayError(ErrorCodes.GRAY_REMOVED, `gray ${entry.id} is not served`));
      return;
    }
    if (!endpoint.bound) {
      // Its clients could not reach it, and its pool would have nowhere to go.
      const why = endpoint.stats.listenError ?? 'not bound yet';
      channel.close(new RelayError(ErrorCodes.PORTS_UNBOUND, `the white cannot listen on the ports of gray ${entry.id} (${why}); it keeps trying`));
      return;
    }
    const limits = this.limits;
    const session = new GraySession(
      entry.id,
      channel,
      gray.remoteIp,
      gray.keys.dataKey,
      Math.min(gray.requestedPool, limits.poolMax),
      limits.preambleTimeoutMs * 2 + limits.heartbeatIntervalMs,
      gray.offersReuse && endpoint.reusesDataConnections,
    );
    // A second login replaces the first only now, after it has authenticated. Both sides say who
    // came, so two processes sharing an id by mistake are told apart (the gray backs off).
    const previous = this.sessions.get(entry.id);
    if (previous) {
      const from = formatHostPort({ host: gray.remoteIp, port: channel.socket.remotePort ?? 0 });
      const before = formatHostPort({ host: previous.remoteIp, port: previous.channel.socket.remotePort ?? 0 });
      const message = `another agent logged in as ${entry.id} from ${from}`;
      this.deps.logger.warn({ gray: entry.id, remote: from, replaced: before, code: ErrorCodes.SESSION_REPLACED }, `${message}; it replaces the session from ${before}`);
      this.endSession(entry.id, new RelayError(ErrorCodes.SESSION_REPLACED, message));
    }
    this.sessions.set(entry.id, session);
    endpoint.attach(session);
    // Initial credits are in flight like any other: never more than inFlightMax at once, even when
    // the pool target is larger (the endpoint grants the rest as connections arrive).
    const credits = session.grantInitial(Math.min(session.poolTarget, limits.inFlightMax));
    channel.send({
      type: MessageType.WELCOME,
      session: sessionIdToString(session.sessionId),
      dataPort: endpoint.ports.dataPort,
      pool: session.poolTarget,
      // The wire range is narrower than what a limits override can say; keep WELCOME valid.
      heartbeatMs: Math.min(MESSAGE_LIMITS.heartbeatMsMax, Math.max(MESSAGE_LIMITS.heartbeatMsMin, limits.heartbeatIntervalMs)),
      credits,
      services: endpoint.entry.services.map((s) => s.name).join(','),
    });
    channel.startHeartbeat(Math.max(MESSAGE_LIMITS.heartbeatMsMin, limits.heartbeatIntervalMs), limits.heartbeatMissed);
    const sessionId = sessionIdToString(session.sessionId);
    this.deps.logger.info({ gray: entry.id, remote: gray.remoteIp, session: sessionId, pool: session.poolTarget, reuse: session.reuse }, 'gray connected');
    this.events.emit('gray.connected', { grayId: entry.id, remoteAddress: gray.remoteIp, sessionId });
    channel.on('message', (m) => {
      if (m.type === MessageType.SERVICES) return this.endpoints.get(entry.id)?.grayServices(session, m.services);
      channel.close(new RelayError(ErrorCodes.MESSAGE_UNEXPECTED, `message type ${m.type} not expected after auth`));
    });
    channel.once('closed', (reason) => {
      if (this.sessions.get(entry.id) === session) this.sessions.delete(entry.id);
      this.endpoints.get(entry.id)?.detach(session, reason.message);
      this.deps.logger.info({ gray: entry.id, remote: gray.remoteIp, session: sessionId, code: reason.code, reason: reason.message }, 'gray disconnected');
      this.events.emit('gray.disconnected', { grayId: entry.id, remoteAddress: gray.remoteIp, sessionId, reason: reason.message });
    });
  }
}

/** Settings a running white does not change; run-white.ts owns these listeners and watchers. */
const RESTART_NEEDED: ReadonlyArray<readonly [keyof WhiteConfig, string]> = [
  ['admin', 'admin: the admin listeners (admin.socket, admin.tcp) are bound at start; restart needed'],
  ['metrics', 'metrics.listen: the metrics listener is bound at start; restart needed'],
  ['watch', 'watch: the file watcher is set up at start; restart needed'],
  ['dashboard', 'dashboard: the dashboard listener is bound at start; restart needed'],
];

function sameAddress(a: WhiteConfig['control'], b: WhiteConfig['control']): boolean {
  return a.host === b.host && a.port === b.port;
}

function bump(counts: Record<string, number>, key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}
