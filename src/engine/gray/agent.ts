// The gray's session with one white (WhiteSessions holds one per white): dials the white's
// control port over TLS 1.3, checks the white's proof before revealing its own (a man in the
// middle learns nothing), receives its data port and credits, keeps the pool full, forwards each
// activated connection to the local service, and reconnects with capped, jittered exponential
// backoff whenever the control session ends — forever, until stopped. A white restart (new
// certificate) needs nothing from the operator: the certificate is not what authenticates the
// white; the proof bound to the TLS session is.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import type { GrayConfig, GrayService, HostPort } from '../../config/types.js';
import { ErrorCodes, RelayError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { Backoff } from '../backoff.js';
import { ControlChannel } from '../control-channel.js';
import { tlsSessionBinding } from '../tls-binding.js';
import { formatHostPort } from '../../config/address.js';
import { decodeProof, deriveSessionKeys, encodeProof, proofsEqual, type SessionKeys } from '../protocol/auth.js';
import { MessageType, type Message } from '../protocol/messages.js';
import { sessionIdFromString } from '../protocol/preamble.js';
import { decodeStartHeader } from '../protocol/start-header.js';
import { RateLimitedLog } from '../../rate-limited-log.js';
import { VERSION } from '../../version.js';
import { resolveHost } from '../net-util.js';
import type { DataPlane } from '../substrate/data-plane.js';
import type { PairEnd } from '../substrate/pair.js';
import { engineStock, SERVICE_KEEPALIVE_SEC } from './engine-link.js';
import { missingFrom, ServiceTable } from './service-table.js';
import { PoolDialer, type PoolLinks } from './pool-dialer.js';
import type { Forward, LinkContext } from './pool-link.js';
import { socketLinks } from './socket-link.js';

const AGENT = `relay/${VERSION}`;

/** The one white a GrayAgent keeps its session with. */
export interface WhiteTarget {
  /** Where the control channel dials: an IP address once a host name has been resolved. */
  readonly control: HostPort;
  /** Host to open data connections to; null: the address the control channel reached. */
  readonly dataHost: string | null;
}

/** The config's only white, dialed as written: for a GrayAgent used on its own (demo, tests). */
export function firstWhite(config: GrayConfig): WhiteTarget {
  const control = config.whites[0];
  if (control === undefined) throw new RelayError(ErrorCodes.CONFIG_INVALID, 'the gray config names no white');
  return { control, dataHost: config.dataHost };
}

export interface GrayAgentOptions {
  /** This process's data plane (openDataPlane, once at startup). */
  readonly dataPlane: DataPlane;
  /** Which white this session is with; the config's first white by default. */
  readonly white?: WhiteTarget;
}

/** With an engine: the IP addresses it dials, resolved before each control connection (and a
 *  reload's new targets before it applies). data is null when the data connections go to the
 *  address the control channel reached. */
interface EngineAddresses {
  readonly data: string | null;
  /** By service name. */
  readonly targets: ReadonlyMap<string, string>;
}

/** Service tables in engines, one per session; ids are never reused within the process. */
let nextRoutesId = 1;

/** One session's state, for logs, status pages and readiness. */
export interface WhiteSessionState {
  /** The address dialed (host:port). */
  readonly white: string;
  readonly connected: boolean;
  /** Epoch ms of the current session's start, null while not connected. */
  readonly connectedSince: number | null;
  /** Verified idle data connections waiting in this white's pool. */
  readonly poolIdle: number;
  readonly poolTarget: number;
  readonly activeForwards: number;
  /** Failed attempts since the last successful login. */
  readonly reconnectAttempts: number;
  readonly lastError: { readonly code: string; readonly message: string; readonly at: number } | null;
}

/** One session's counters since it was made, for the gray's status listener (/metrics). */
export interface WhiteSessionCounts {
  /** Authenticated sessions (the first one included). */
  readonly sessions: number;
  /** Reconnect attempts scheduled after a failed connect or a lost session. */
  readonly reconnects: number;
  /** Forwards ended, with their bytes: from the white (clients) to the service, and back. */
  readonly forwardsTotal: number;
  readonly bytesToService: number;
  readonly bytesFromService: number;
  /** Forwards whose connect to the local service failed. */
  readonly serviceConnectFailures: number;
}

export interface GrayAgentEvents {
  connected: [{ sessionId: string; dataPort: number; fingerprint: string }];
  disconnected: [RelayError];
  'pool-ready': [number];
  /** A connect failed or the session ended; the next attempt is in delayMs. */
  reconnecting: [{ attempt: number; delayMs: number; why: string }];
}

export class GrayAgent extends EventEmitter<GrayAgentEvents> {
  private readonly backoff: Backoff;
  /** After another agent took this id's session: long waits, growing while it keeps happening,
   *  so two grays sharing an id by mistake do not take the session from each other endlessly. */
  private readonly replacedBackoff: Backoff;
  private readonly counters = { sessions: 0, reconnects: 0, forwardsTotal: 0, bytesToService: 0, bytesFromService: 0, serviceConnectFailures: 0 };
  private readonly warnings: RateLimitedLog;
  private channel: ControlChannel | null = null;
  private dialer: PoolDialer | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  private readonly active = new Set<Forward>();
  /** Pairs the engine forwarded by itself (ids, no object each), of any session of this agent. */
  private readonly enginePairs = new Set<number>();
  private enginePairsDrained: (() => void) | null = null;
  private readonly logger: Logger;
  private connectedSince: number | null = null;
  private poolTarget = 0;
  private lastError: WhiteSessionState['lastError'] = null;
  private readonly dataPlane: DataPlane;
  /** This session's service table, what the white has, and the engine's copy of the table. */
  private table: ServiceTable | null = null;
  private whiteServices: string[] = [];
  private routes = 0;
  private addresses: EngineAddresses | null = null;
  readonly white: WhiteTarget;
  /** host:port of the white, as in logs (the key `white`). */
  readonly where: string;

  constructor(
    private config: GrayConfig,
    logger: Logger,
    options: GrayAgentOptions,
  ) {
    super();
    this.white = options.white ?? firstWhite(config);
    this.where = formatHostPort(this.white.control);
    this.logger = logger.child({ white: this.where });
    this.dataPlane = options.dataPlane;
    this.backoff = new Backoff(config.limits.reconnectBaseMs, config.limits.reconnectMaxMs);
    this.replacedBackoff = new Backoff(config.limits.reconnectMaxMs, config.limits.reconnectMaxMs * 4);
    this.warnings = new RateLimitedLog(this.logger);
  }

  get activeForwards(): number {
    return this.active.size + this.enginePairs.size;
  }

  /** This session's counters since it was made (see WhiteSessionCounts). */
  counts(): WhiteSessionCounts {
    this.dataPlane.engine?.catchUp();  // the engine's held bookkeeping events first
    return { ...this.counters };
  }

  start(): void {
    this.connect();
  }

  state(): WhiteSessionState {
    this.dataPlane.engine?.catchUp();
    return {
      white: this.where,
      connected: this.connectedSince !== null,
      connectedSince: this.connectedSince,
      poolIdle: this.dialer?.idleCount ?? 0,
      poolTarget: this.connectedSince === null ? 0 : this.poolTarget,
      activeForwards: this.activeForwards,
      reconnectAttempts: this.backoff.attempts,
      lastError: this.lastError,
    };
  }

  /** Stop reconnecting, end the session and the idle pool, let active forwards finish up to drainMs. */
  async stop(drainMs = this.config.limits.drainTimeoutMs): Promise<void> {
    this.stopping = true;
    // The engine's bookkeeping events (clients it forwarded a moment ago) first, so each is drained.
    this.dataPlane.engine?.catchUp();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.dialer?.stop();
    this.channel?.close(new RelayError(ErrorCodes.SHUTDOWN, 'gray is shutting down'));
    if (this.activeForwards > 0) {
      this.logger.info({ active: this.activeForwards, drainMs }, 'draining active connections');
      const deadline = Date.now() + drainMs;
      let timer: NodeJS.Timeout | undefined;
      const engineDrained = this.enginePairs.size === 0 ? Promise.resolve() : new Promise<void>((r) => (this.enginePairsDrained = r));
      await Promise.race([
        Promise.all([...[...this.active].map((f) => f.closed), engineDrained]),
        new Promise((r) => (timer = setTimeout(r, Math.max(1, deadline - Date.now())))),
      ]);
      clearTimeout(timer);
      for (const f of this.active) f.destroy();
      for (const pair of this.enginePairs) this.dataPlane.engine?.handle.destroy(pair);
    }
  }

  private connect(): void {
    if (this.stopping) return;
    if (!this.dataPlane.engine) return this.connectControl(null);
    this.resolveForEngine().then(
      (addresses) => this.connectControl(addresses),
      (err: Error) => {
        this.logger.warn({ gray: this.config.id, code: ErrorCodes.TARGET_UNREACHABLE, detail: err.message }, 'cannot resolve an address to dial');
        this.lastError = { code: ErrorCodes.TARGET_UNREACHABLE, message: err.message, at: Date.now() };
        this.scheduleReconnect(err.message);
      },
    );
  }

  /** An engine dials IP addresses: host names are resolved here, as Node's connect would, once
   *  per control connection (so a changed DNS answer is seen at the next reconnect). */
  private async resolveForEngine(): Promise<EngineAddresses> {
    const { dataHost } = this.white;
    const resolve = async (what: string, host: string): Promise<string> => {
      try {
        return await resolveHost(host);
      } catch (err) {
        throw new Error(`${what} ${host}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    const data = dataHost === null || (net.isIP(dataHost) === 0 && dataHost === this.white.control.host) ? null : await resolve('data host', dataHost);
    return { data, targets: await resolveTargets(this.config.services, resolve) };
  }

  private connectControl(addresses: EngineAddresses | null): void {
    if (this.stopping) return;
    const { limits, id, secret } = this.config;
    const { where } = this;
    const white = this.white.control;
    const socket = tls.connect({
      host: white.host,
      port: white.port,
      minVersion: 'TLSv1.3',
      // The certificate is self-signed and new at every white start; the white is authenticated
      // by its proof over this session's keying material instead (checked below).
      rejectUnauthorized: false,
      ...(net.isIP(white.host) !== 0 ? {} : { servername: white.host }),
    });
    const handshakeTimer = setTimeout(() => socket.destroy(new RelayError(ErrorCodes.HANDSHAKE_TIMEOUT, `TLS handshake with ${where} not done within ${limits.handshakeTimeoutMs} ms`)), limits.handshakeTimeoutMs);
    socket.once('error', (err) => {
      clearTimeout(handshakeTimer);
      if (!this.channel || this.channel.socket !== socket) {
        // An OS error (ECONNREFUSED, ETIMEDOUT) or the handshake deadline's RelayError.
        this.lastError = { code: (err as NodeJS.ErrnoException).code ?? ErrorCodes.INTERNAL, message: err.message, at: Date.now() };
        this.scheduleReconnect(err.message);
      }
    });
    socket.once('secureConnect', () => {
      clearTimeout(handshakeTimer);
      const fingerprint = socket.getPeerCertificate().fingerprint256 ?? '';
      const channel = new ControlChannel(socket, { maxPayloadBytes: limits.frameMaxBytesBeforeAuth });
      this.channel = channel;
      this.handshake(channel, socket, fingerprint, id, secret, addresses);
      channel.once('closed', (reason) => this.onClosed(channel, reason));
    });
  }

  private handshake(channel: ControlChannel, socket: tls.TLSSocket, fingerprint: string, id: string, secret: Buffer, addresses: EngineAddresses | null): void {
    const { limits } = this.config;
    let keys: SessionKeys | null = null;
    let state: 'white-proof' | 'welcome' | 'ready' = 'white-proof';
    const authTimer = setTimeout(() => channel.close(new RelayError(ErrorCodes.AUTH_TIMEOUT, `not authenticated within ${limits.authTimeoutMs} ms`)), limits.authTimeoutMs);
    channel.once('closed', () => clearTimeout(authTimer));

    const onMessage = (message: Message): void => {
      if (state === 'white-proof' && message.type === MessageType.WHITE_PROOF) {
        keys = deriveSessionKeys(secret, tlsSessionBinding(socket), id);
        if (!proofsEqual(keys.whiteProof, decodeProof(message.proof))) {
          // Wrong secret on the white's side, or someone in the middle: never send our proof.
          channel.close(new RelayError(ErrorCodes.WHITE_PROOF_INVALID, `the white at ${this.where} did not prove it knows the secret (wrong secret, or the id is not known to the white yet, or a man in the middle; certificate ${fingerprint})`));
          return;
        }
        // The white is authenticated: its WELCOME may name up to 64 services.
        channel.setMaxPayloadBytes(limits.frameMaxBytesAfterAuth);
        channel.send({ type: MessageType.GRAY_PROOF, proof: encodeProof(keys.grayProof) });
        state = 'welcome';
        return;
      }
      if (state === 'welcome' && message.type === MessageType.WELCOME && keys) {
        clearTimeout(authTimer);
        state = 'ready';
        channel.setMaxPayloadBytes(limits.frameMaxBytesAfterAuth);
        channel.startHeartbeat(message.heartbeatMs, limits.heartbeatMissed);
        this.backoff.reset();
        this.counters.sessions += 1;
        this.connectedSince = Date.now();
        this.poolTarget = message.pool;
        // A fresh table per session: the white learns its positions from the SERVICES below,
        // before it can write a start header that uses them.
        this.table = new ServiceTable(this.config.services);
        this.addresses = addresses;
        this.routes = this.dataPlane.engine && addresses ? nextRoutesId++ : 0;
        this.setRoutes();
        channel.send({ type: MessageType.SERVICES, services: this.table.wire() });
        this.whiteServices = splitServices(message.services);
        this.startPool(message.session, this.openLinks(message.dataPort, socket.remoteAddress, addresses), message.pool, message.credits, keys.dataKey);
        this.logger.info({ gray: id, fingerprint, dataPort: message.dataPort, pool: message.pool, services: this.table.names() }, 'gray connected');
        this.warnMismatch();
        this.emit('connected', { sessionId: message.session, dataPort: message.dataPort, fingerprint });
        return;
      }
      if (state === 'ready' && message.type === MessageType.GRANT) {
        this.dialer?.grant(message.upTo);
        return;
      }
      if (state === 'ready' && message.type === MessageType.SERVICES) {
        this.whiteServices = splitServices(message.services);
        this.warnMismatch();
        return;
      }
      channel.close(new RelayError(ErrorCodes.MESSAGE_UNEXPECTED, `message type ${message.type} not expected in state ${state}`));
    };
    channel.on('message', onMessage);
    // Only the engine decodes framed data connections (native/engine.h, Framing).
    channel.send({ type: MessageType.HELLO, id, pool: this.config.pool, reuse: this.dataPlane.engine && addresses ? 1 : 0, agent: AGENT });
  }

  /** How this session's data connections are opened: by the engine at the addresses resolved
   *  for this connection, or by Node sockets on the JS plane. Without a data host they go to the
   *  address the control channel reached (the same white). */
  private openLinks(dataPort: number, controlPeer: string | undefined, addresses: EngineAddresses | null): PoolLinks {
    const ctx: LinkContext = { config: this.config, logger: this.logger, warnings: this.warnings, port: dataPort, serviceUnreachable: () => void (this.counters.serviceConnectFailures += 1) };
    const engine = this.dataPlane.engine;
    // The control socket has its peer's address while it is open, and it is open here.
    const reached = controlPeer ?? this.white.control.host;
    if (!engine || !addresses) {
      const dataHost = this.white.dataHost ?? reached;
      return { open: socketLinks(ctx, dataHost), where: formatHostPort({ host: dataHost, port: dataPort }) };
    }
    const dataIp = addresses.data ?? reached;
    const engineCtx: LinkContext = { ...ctx, targetIp: (service) => this.addresses?.targets.get(service.name) ?? service.target.host, serviceAt: (index) => this.table?.at(index) };
    return { stock: engineStock(engine, engineCtx, dataIp, this.routes), where: formatHostPort({ host: dataIp, port: dataPort }) };
  }

  private startPool(session: string, links: PoolLinks, poolTarget: number, credits: number, dataKey: Buffer): void {
    this.dialer?.stop();
    const dialer = new PoolDialer({
      ...links,
      sessionId: sessionIdFromString(session),
      dataKey,
      poolTarget,
      config: this.config,
      logger: this.logger,
      onPoolReady: (idle) => {
        this.logger.info({ gray: this.config.id, idle }, 'pool ready');
        this.emit('pool-ready', idle);
      },
      onActivated: (link, client) => {
        const service = this.table?.at(client.service);
        if (service === undefined) {
          // An index this session's table no longer holds: a service removed a moment ago.
          this.warnings.warn(`service:${client.service}`, { gray: this.config.id, code: ErrorCodes.SERVICE_NOT_ON_GRAY, index: client.service }, 'a client for a service this gray no longer has, closed');
          return link.destroy();
        }
        const forward = link.forward(client, service, (result) => {
          this.active.delete(forward);
          this.countForward(result);
        });
        this.active.add(forward);
      },
      onForwarded: (forwarded) => {
        this.enginePairs.add(forwarded.pair);
        if (!this.logger.isLevelEnabled('debug')) return;
        const client = decodeStartHeader(forwarded.header, true);
        this.logger.debug({ client: formatHostPort({ host: client.srcAddress, port: client.srcPort }), service: this.table?.at(client.service)?.name }, 'forwarding');
      },
      onForwardEnded: (pair, end) => {
        if (!this.enginePairs.delete(pair)) return;
        this.countForward(end);
        if (this.enginePairs.size === 0) this.enginePairsDrained?.();
      },
    });
    this.dialer = dialer;
    dialer.grant(credits);
  }

  private countForward(result: PairEnd | null): void {
    this.counters.forwardsTotal += 1;
    // The data connection is side a: what it read came from the client, through the white.
    if (result) {
      this.counters.bytesToService += result.bytesFromA;
      this.counters.bytesFromService += result.bytesFromB;
    }
  }

  private onClosed(channel: ControlChannel, reason: RelayError): void {
    if (this.channel !== channel) return;
    this.channel = null;
    this.dialer?.stop();
    this.dialer = null;
    this.forgetRoutes();
    this.table = null;
    this.connectedSince = null;
    if (reason.code !== ErrorCodes.SHUTDOWN) this.lastError = { code: reason.code, message: reason.message, at: Date.now() };
    this.emit('disconnected', reason);
    if (this.stopping) return;
    if (reason.code === ErrorCodes.SESSION_REPLACED) {
      // The white's words name the other agent's address.
      const said = reason.message.replace(/^peer closed: [A-Z_]+: /, '');
      const delayMs = this.replacedBackoff.next();
      this.logger.error({ gray: this.config.id, code: reason.code, reason: reason.message, retryInMs: delayMs }, `${said}; this agent waits before logging in again (two grays with the same id?)`);
      this.scheduleReconnect(reason.message, delayMs);
      return;
    }
    this.replacedBackoff.reset();
    const level = reason.code === ErrorCodes.AUTH_FAILED || reason.code === ErrorCodes.WHITE_PROOF_INVALID ? 'error' : 'warn';
    this.logger[level]({ gray: this.config.id, code: reason.code, reason: reason.message }, 'control session ended');
    this.scheduleReconnect(reason.message);
  }

  /**
   * A reloaded file with the same whites, id and secret: its services apply to the next client,
   * without a reconnect and without touching active clients. Added services take new positions
   * in this session's table (the white is told with SERVICES), removed ones leave theirs empty,
   * changed targets and PROXY settings replace their routes. Only a table that would overflow
   * its 256 positions starts a new session. Rejects when a new target does not resolve (with an
   * engine); the running services stay then.
   */
  async applyServices(next: GrayConfig): Promise<void> {
    const addresses = this.dataPlane.engine && this.addresses ? { data: this.addresses.data, targets: await resolveTargets(next.services, async (what, host) => resolveHost(host).catch((err: Error) => Promise.reject(new Error(`${what} ${host}: ${err.message}`)))) } : null;
    this.config = next;
    const table = this.table;
    if (!table || !this.channel) return;
    if (!table.fits(next.services)) {
      this.channel.close(new RelayError(ErrorCodes.SHUTDOWN, 'the service table of this session is full after many reloads; starting a new session'));
      return;
    }
    if (addresses) this.addresses = addresses;
    const change = table.update(next.services);
    this.setRoutes();
    if (change.added.length > 0 || change.removed.length > 0) {
      this.channel.send({ type: MessageType.SERVICES, services: table.wire() });
      this.warnMismatch();
    }
    if (change.added.length + change.removed.length + change.changed.length > 0) this.logger.info({ gray: next.id, ...change }, 'services reloaded');
  }

  /** A service on one side only is said at login and whenever either side's set changes. */
  private warnMismatch(): void {
    if (!this.table) return;
    const mine = this.table.names();
    for (const name of missingFrom(this.whiteServices, mine)) {
      this.logger.warn({ gray: this.config.id, service: name, code: ErrorCodes.SERVICE_NOT_ON_GRAY }, `the white has service ${name}, this gray's file does not: its clients are refused`);
    }
    for (const name of missingFrom(mine, this.whiteServices)) {
      this.logger.warn({ gray: this.config.id, service: name, code: ErrorCodes.SERVICE_NOT_ON_WHITE }, `service ${name} is not in the white's file for this gray: nothing is exposed for it`);
    }
  }

  /** The engine's copy of this session's table: services without a PROXY header are forwarded
   *  by the engine itself. */
  private setRoutes(): void {
    const engine = this.dataPlane.engine;
    if (!engine || this.routes === 0 || !this.table || !this.addresses) return;
    const targets = this.addresses.targets;
    engine.handle.setRoutes(
      this.routes,
      this.table.positions().map((s) => (s && s.proxyProtocol === 'none' && targets.has(s.name) ? ([targets.get(s.name)!, s.target.port, SERVICE_KEEPALIVE_SEC] as const) : null)),
    );
  }

  private forgetRoutes(): void {
    if (this.routes !== 0) this.dataPlane.engine?.handle.setRoutes(this.routes, []);
    this.routes = 0;
  }

  private scheduleReconnect(why: string, fixedDelayMs?: number): void {
    if (this.stopping || this.reconnectTimer) return;
    const delayMs = fixedDelayMs ?? this.backoff.next();
    this.counters.reconnects += 1;
    this.logger.info({ gray: this.config.id, retryInMs: delayMs, attempt: this.backoff.attempts, why }, 'reconnecting');
    this.emit('reconnecting', { attempt: this.backoff.attempts, delayMs, why });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delayMs);
  }
}

function splitServices(list: string): string[] {
  return list.split(',').filter((n) => n !== '');
}

/** Each service's target as an IP address; names shared by several services are looked up once. */
async function resolveTargets(services: readonly GrayService[], resolve: (what: string, host: string) => Promise<string>): Promise<Map<string, string>> {
  const byHost = new Map<string, Promise<string>>();
  const out = new Map<string, string>();
  for (const s of services) {
    let ip = byHost.get(s.target.host);
    if (!ip) byHost.set(s.target.host, (ip = resolve(`target of service ${s.name}`, s.target.host)));
    out.set(s.name, await ip);
  }
  return out;
}
