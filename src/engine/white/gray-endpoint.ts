// One gray's TCP listeners on the white: a public port per service for Internet clients and
// `data_port` for that gray's one pool, which all its services share. The data side is where strangers can knock, so every
// connection there is unverified until its 60-byte preamble arrives in time, names the gray's
// current session, comes from the control connection's address (unless that check is off),
// carries a valid tag and a fresh counter within the granted credits. Only then does the broker
// see it. How connections arrive (an engine's listeners, or Node's on the JS plane) is the
// intake's business (port-intake.ts); the checks are here, once.
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import type { EventSink } from '../../hooks/events.js';
import type { Limits } from '../../limits.js';
import type { Logger } from '../../log.js';
import type { GrayEntry } from '../../config/types.js';
import type { DataPlane } from '../substrate/data-plane.js';
import type { HeldConn } from '../substrate/held-conn.js';
import { normalizeIp } from '../net-util.js';
import { parsePreamble, preambleTagValid } from '../protocol/preamble.js';
import type { RateLimitedLog } from '../../rate-limited-log.js';
import { newGrayStats, type GrayStats } from '../stats.js';
import { Backoff } from '../backoff.js';
import type { GraySession } from './gray-session.js';
import { EngineIntake } from './engine-intake.js';
import { NodeIntake } from './node-intake.js';
import { PoolBroker, type Gate } from './pool-broker.js';
import type { IntakePorts, IntakeSettings, PortIntake, Verdict } from './port-intake.js';
import { deepEqual } from '../../config/diff.js';
import { MessageType } from '../protocol/messages.js';

/** Retrying a port pair that could not be bound: soon at first (a port freed a moment later),
 *  then every 5 s at most (a bind that fails costs one system call; a gray waits no longer). */
const PORT_RETRY_BASE_MS = 250;
const PORT_RETRY_MAX_MS = 5_000;

export interface EndpointContext {
  readonly dataPlane: DataPlane;
  /** The address to listen on: with an engine, an IP address (the white resolves a name). */
  readonly bind: string;
  /** Read at each use: a reload may switch it (the white passes a getter). */
  readonly dataSourceCheck: boolean;
  /** TCP keepalive delay on public-port client sockets; 0: none. */
  readonly clientKeepAliveMs?: number;
  /** The white's live limits: one object that a reload updates in place, read at each use. */
  readonly limits: Readonly<Limits>;
  readonly logger: Logger;
  readonly events: EventSink;
  readonly warnings: RateLimitedLog;
  readonly clientGate: Gate | null;
  /** Whether clientGate decides anything now (see WhiteGates.clientConnectDeciding). */
  readonly clientGateDeciding?: () => boolean;
  /** Counts a refused data-port connection by reason (clients refused on the public port are
   *  counted per gray, in stats.clientsRefused). */
  readonly countRejection: (code: ErrorCode) => void;
}

export class GrayEndpoint {
  readonly stats: GrayStats = newGrayStats();
  readonly broker: PoolBroker;
  private readonly intake: PortIntake;
  private readonly bindRetry = new Backoff(PORT_RETRY_BASE_MS, PORT_RETRY_MAX_MS);
  private bindTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private current: GrayEntry,
    private readonly ctx: EndpointContext,
  ) {
    this.broker = new PoolBroker(current.id, this.stats, ctx.limits, ctx.logger, ctx.events, (c, code, d, service) => (code === ErrorCodes.PREAMBLE_INVALID ? this.refuse(c, c.remoteAddress, code, d) : this.refuseClient(c, code, d, service)), ctx.clientGate, ctx.clientGateDeciding, {
      timeoutMs: () => this.current.idleTimeoutMs ?? null,
      onTimeout: (client, idleMs) => {
        this.stats.idleTimeouts += 1;
        ctx.warnings.warn(`${current.id}:${ErrorCodes.CLIENT_IDLE_TIMEOUT}`, { gray: current.id, code: ErrorCodes.CLIENT_IDLE_TIMEOUT, client, idleMs }, 'client idle, reset');
      },
    });
    // Settings are read at each use, so a reload's new values reach the running intake.
    const entry = (): GrayEntry => this.current;
    const settings: IntakeSettings = {
      grayId: current.id,
      bind: ctx.bind,
      get services() {
        return entry().services;
      },
      dataPort: current.dataPort,
      get dataSourceCheck() {
        return ctx.dataSourceCheck;
      },
      clientKeepAliveMs: ctx.clientKeepAliveMs ?? ctx.limits.clientKeepAliveDelayMs,
      get preambleTimeoutMs() {
        return ctx.limits.preambleTimeoutMs;
      },
      get keepAliveDelayMs() {
        return ctx.limits.keepAliveDelayMs;
      },
      get unverifiedLimit() {
        return ctx.limits.unverifiedDataPerPort;
      },
    };
    const engine = ctx.dataPlane.engine;
    if (engine) {
      const intake = new EngineIntake(engine, settings, this);
      this.broker.useLender(intake);
      this.intake = intake;
    } else {
      this.intake = new NodeIntake(settings, this);
    }
  }

  get entry(): GrayEntry {
    return this.current;
  }

  /** Whether a gray that offers it gets framed, reused data connections: only an engine intake
   *  frames them (native/engine.h, Framing). */
  get reusesDataConnections(): boolean {
    return this.intake instanceof EngineIntake;
  }

  /** Same id and data port; a new secret, idle timeout or services: the data port, the session
   *  and the clients stay. Public ports of added services are opened, those of removed services
   *  closed (their active clients finish), and the gray is told the white's services again.
   *  Resolves with why a new public port could not be had (retried like a bind), or null. */
  async replaceEntry(entry: GrayEntry): Promise<string | null> {
    const before = this.current;
    this.current = entry;
    this.broker.settingsChanged();
    if (deepEqual(before.services, entry.services)) return null;
    let error: string | null = null;
    try {
      await this.intake.servicesChanged();
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
      this.ctx.logger.error({ gray: entry.id, code: ErrorCodes.LISTEN, error }, 'cannot bind the public port of a service');
    }
    const names = (e: GrayEntry): string => e.services.map((s) => s.name).join(',');
    const session = this.broker.currentSession;
    if (names(before) !== names(entry) && session && !session.channel.isClosed) {
      session.channel.send({ type: MessageType.SERVICES, services: names(entry) });
      this.warnMismatch(session);
    }
    this.broker.servicesChanged();
    return error;
  }

  /** The gray's SERVICES: its table for this session. */
  grayServices(session: GraySession, list: string): void {
    session.setGrayTable(list);
    if (this.broker.currentSession !== session) return;
    // Applied before it is logged: a client that connects once the log says so meets the new
    // table (the engine already has the new indexes).
    this.broker.servicesChanged();
    this.ctx.logger.info({ gray: this.current.id, services: session.grayServices }, 'gray services');
    this.warnMismatch(session);
  }

  /** A service on one side only is said whenever either side's set changes. */
  private warnMismatch(session: GraySession): void {
    const gray = session.grayServices;
    if (gray === null) return;
    const white = this.current.services.map((s) => s.name);
    const { id } = this.current;
    for (const name of white.filter((n) => !gray.includes(n))) {
      this.ctx.logger.warn({ gray: id, service: name, code: ErrorCodes.SERVICE_NOT_ON_GRAY }, `gray ${id} has no service ${name} in its file: its clients are refused`);
    }
    for (const name of gray.filter((n) => !white.includes(n))) {
      this.ctx.logger.warn({ gray: id, service: name, code: ErrorCodes.SERVICE_NOT_ON_WHITE }, `gray ${id} has service ${name}, which this white's file does not: nothing is exposed for it`);
    }
  }

  /** Whether both ports are listening (see bind). */
  get bound(): boolean {
    return this.stats.portsBound;
  }

  /**
   * Binds the port pair. A port that cannot be had (taken by another program, a bind address
   * gone) costs this gray only: the OS error is kept for the snapshot and logged, and binding is
   * tried again with backoff until it works or the endpoint is closed. Resolves with that error,
   * or null once bound.
   */
  async bind(): Promise<string | null> {
    if (this.closed) return null;
    try {
      await this.intake.listen();
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      this.stats.bindFailures += 1;
      // The first failure and a different one are worth a line; the same one again is not.
      if (error !== this.stats.listenError) {
        this.ctx.logger.error({ gray: this.entry.id, code: ErrorCodes.LISTEN, error, retrying: true }, 'cannot bind the ports of a gray; retrying');
      }
      this.stats.listenError = error;
      this.scheduleBind();
      return error;
    }
    if (this.closed) {
      this.intake.close();
      return null;
    }
    if (this.stats.listenError !== null) this.ctx.logger.info({ gray: this.entry.id, ...this.ports, attempts: this.bindRetry.attempts + 1 }, 'ports of a gray bound');
    this.stats.portsBound = true;
    this.stats.listenError = null;
    this.bindRetry.reset();
    return null;
  }

  private scheduleBind(): void {
    if (this.closed) return;
    this.bindTimer = setTimeout(() => {
      this.bindTimer = null;
      void this.bind();
    }, this.bindRetry.next());
    this.bindTimer.unref();
  }

  /** The white's settings changed (a reload): apply what the running intake and broker hold.
   *  Returns the settings this endpoint's listeners cannot take until they are bound again. */
  settingsChanged(): string[] {
    this.intake.sessionChanged();
    this.broker.limitsChanged();
    return this.stats.portsBound ? (this.intake.fixedAtBind?.() ?? []) : [];
  }

  /** The ports actually bound (differs from the entry when it asked for port 0, as tests do). */
  get ports(): IntakePorts {
    return this.intake.ports;
  }

  attach(session: GraySession): void {
    this.broker.attach(session);
    this.stats.connectedSince = session.connectedAt;
    this.stats.remoteAddress = session.remoteIp;
    this.intake.sessionChanged();
  }

  detach(session: GraySession, reason: string): void {
    if (this.broker.currentSession !== session) return;
    this.broker.detach(session);
    this.stats.connectedSince = null;
    this.stats.lastError = reason;
    this.intake.sessionChanged();
  }

  /** Stop accepting on both ports; with closeActive, also cut the clients (gray deleted). */
  close(closeActive: boolean): void {
    this.closed = true;
    if (this.bindTimer) clearTimeout(this.bindTimer);
    this.bindTimer = null;
    this.broker.close(closeActive);
    this.intake.close();
  }

  /** Checks a complete preamble from remoteAddress (for the intakes). */
  verify(remoteAddress: string | undefined, preamble: Buffer): Verdict {
    let fields;
    try {
      fields = parsePreamble(preamble);
    } catch (err) {
      return { ok: false, code: ErrorCodes.PREAMBLE_INVALID, detail: err instanceof Error ? err.message : String(err) };
    }
    const session = this.broker.currentSession;
    if (!session || !session.sessionId.equals(fields.sessionId)) {
      return { ok: false, code: ErrorCodes.PREAMBLE_UNKNOWN_SESSION, detail: 'preamble names no current session of this gray' };
    }
    const source = normalizeIp(remoteAddress);
    if (this.ctx.dataSourceCheck && source !== session.remoteIp) {
      return { ok: false, code: ErrorCodes.PREAMBLE_WRONG_SOURCE, detail: `data connection from ${source}, control connection from ${session.remoteIp}` };
    }
    // The tag before the window: a forged preamble must not be able to burn a counter.
    if (!preambleTagValid(preamble, session.dataKey)) {
      return { ok: false, code: ErrorCodes.PREAMBLE_INVALID, detail: 'preamble tag does not verify' };
    }
    const accepted = session.window.accept(fields.counter);
    if (accepted === 'replay') return { ok: false, code: ErrorCodes.PREAMBLE_REPLAY, detail: `counter ${fields.counter} already used` };
    if (accepted === 'no-credit') {
      return { ok: false, code: ErrorCodes.PREAMBLE_NO_CREDIT, detail: `counter ${fields.counter} beyond granted ${session.window.granted}` };
    }
    return { ok: true, session };
  }

  /** A data-port connection refused: counts and logs it; closes it when there is one. */
  refuse(conn: HeldConn | null, remote: string | undefined, code: ErrorCode, detail: string): void {
    conn?.destroy();
    this.ctx.countRejection(code);
    this.ctx.warnings.warn(`${this.entry.id}:${code}`, { gray: this.entry.id, code, remote, detail }, 'connection refused');
  }

  /** A client on a public port. */
  private refuseClient(client: HeldConn, code: ErrorCode, detail: string, service?: string): void {
    client.destroy();
    this.countRefused(code, service);
    this.ctx.warnings.warn(`${this.entry.id}:${service ?? ''}:${code}`, { gray: this.entry.id, ...(service === undefined ? {} : { service }), code, remote: client.remoteAddress, detail }, 'connection refused');
  }

  /** A client outside its service's allow-list, closed at accept (by the engine, or Node's
   *  listener before reading): counted and logged, rate-limited, like any refused client. */
  refuseNotAllowed(service: string, remote: string): void {
    this.countRefused(ErrorCodes.CLIENT_NOT_ALLOWED, service);
    this.ctx.warnings.warn(`${this.entry.id}:${service}:${ErrorCodes.CLIENT_NOT_ALLOWED}`, { gray: this.entry.id, service, code: ErrorCodes.CLIENT_NOT_ALLOWED, remote }, 'client not in the allow-list, closed');
  }

  private countRefused(code: ErrorCode, service: string | undefined): void {
    this.stats.clientsRefused[code] = (this.stats.clientsRefused[code] ?? 0) + 1;
    if (service === undefined) return;
    const perService = this.broker.serviceStats(service);
    perService.clientsRefused[code] = (perService.clientsRefused[code] ?? 0) + 1;
  }

  /** A listener cannot accept for a moment (out of descriptors): worth a warning. */
  listenerTrouble(detail: string): void {
    this.ctx.warnings.warn(`${this.current.id}:listen`, { gray: this.current.id, detail }, 'cannot accept');
  }
}
