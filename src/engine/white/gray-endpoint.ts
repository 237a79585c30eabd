// One gray's pair of TCP listeners on the white: `public_port` for Internet clients and
// `data_port` for that gray's pool. The data side is where strangers can knock, so every
// connection there is unverified until its 60-byte preamble arrives in time, names the gray's
// current session, comes from the control connection's address (unless that check is off),
// carries a valid tag and a fresh counter within the granted credits. Only then does the broker
// see it. How connections arrive (Node's listeners or the native engine's) is the intake's
// business (port-intake.ts); the checks are here, once.
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import type { EventSink } from '../../hooks/events.js';
import type { Limits } from '../../limits.js';
import type { Logger } from '../../log.js';
import type { GrayEntry } from '../../config/types.js';
import type { HeldConn } from '../data-plane/held-conn.js';
import { resolveDataPlane } from '../data-plane/join.js';
import { engineTakesAddress } from '../data-plane/native-engine.js';
import { normalizeIp } from '../net-util.js';
import { parsePreamble, preambleTagValid } from '../protocol/preamble.js';
import type { RateLimitedLog } from '../../rate-limited-log.js';
import { newGrayStats, type GrayStats } from '../stats.js';
import type { GraySession } from './gray-session.js';
import { NativeIntake } from './native-intake.js';
import { NodeIntake } from './node-intake.js';
import { PoolBroker, type Gate } from './pool-broker.js';
import type { IntakeOwner, PortIntake, Verdict } from './port-intake.js';

export type IntakeKind = 'native' | 'node';

export interface EndpointContext {
  readonly bind: string;
  readonly dataSourceCheck: boolean;
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
  /** Who accepts; by default the native engine when the splice plane is in use and the bind
   *  address is an IP, Node otherwise. */
  readonly intake?: IntakeKind;
}

/** The intake a white uses when nothing asks for a particular one. */
export function defaultIntake(bind: string): IntakeKind {
  return resolveDataPlane().plane === 'splice' && engineTakesAddress(bind) ? 'native' : 'node';
}

export class GrayEndpoint {
  readonly stats: GrayStats = newGrayStats();
  readonly broker: PoolBroker;
  readonly intakeKind: IntakeKind;
  private readonly intake: PortIntake;

  constructor(
    private current: GrayEntry,
    private readonly ctx: EndpointContext,
  ) {
    this.broker = new PoolBroker(current.id, this.stats, ctx.limits, ctx.logger, ctx.events, (c, code, d) => (code === ErrorCodes.PREAMBLE_INVALID ? this.refuse(c, c.remoteAddress, code, d) : this.refuseClient(c, code, d)), ctx.clientGate, ctx.clientGateDeciding);
    this.intakeKind = ctx.intake ?? defaultIntake(ctx.bind);
    const owner: IntakeOwner = {
      grayId: current.id,
      bind: ctx.bind,
      publicPort: current.publicPort,
      dataPort: current.dataPort,
      dataSourceCheck: ctx.dataSourceCheck,
      preambleTimeoutMs: ctx.limits.preambleTimeoutMs,
      keepAliveDelayMs: ctx.limits.keepAliveDelayMs,
      unverifiedLimit: ctx.limits.unverifiedDataPerPort,
      currentSession: () => this.broker.currentSession,
      verify: (remote, preamble) => this.verify(remote, preamble),
      onClient: (client) => this.broker.onClient(client),
      onVerified: (data, session) => this.broker.addIdle(data, session),
      onLentPaired: (client, data, adopt) => this.broker.onLentPaired(client, data, adopt),
      refuse: (conn, remote, code, detail) => this.refuse(conn, remote, code, detail),
      listenerTrouble: (detail) => ctx.warnings.warn(`${current.id}:listen`, { gray: current.id, detail }, 'cannot accept'),
    };
    this.intake = this.intakeKind === 'native' ? new NativeIntake(owner) : new NodeIntake(owner);
    if (this.intake.lender) this.broker.useLender(this.intake.lender);
  }

  get entry(): GrayEntry {
    return this.current;
  }

  /** Same id and ports, new secret: the listeners and clients stay. */
  replaceEntry(entry: GrayEntry): void {
    this.current = entry;
  }

  listen(): Promise<void> {
    return this.intake.listen();
  }

  /** The ports actually bound (differs from the entry when it asked for port 0, as tests do). */
  get ports(): { publicPort: number; dataPort: number } {
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
    this.broker.close(closeActive);
    this.intake.close();
  }

  private verify(remoteAddress: string | undefined, preamble: Buffer): Verdict {
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

  /** A data-port connection. */
  private refuse(conn: HeldConn | null, remote: string | undefined, code: ErrorCode, detail: string): void {
    conn?.destroy();
    this.ctx.countRejection(code);
    this.ctx.warnings.warn(`${this.entry.id}:${code}`, { gray: this.entry.id, code, remote, detail }, 'connection refused');
  }

  /** A client on the public port. */
  private refuseClient(client: HeldConn, code: ErrorCode, detail: string): void {
    client.destroy();
    this.stats.clientsRefused[code] = (this.stats.clientsRefused[code] ?? 0) + 1;
    this.ctx.warnings.warn(`${this.entry.id}:${code}`, { gray: this.entry.id, code, remote: client.remoteAddress, detail }, 'connection refused');
  }
}
