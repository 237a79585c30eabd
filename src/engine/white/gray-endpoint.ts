// One gray's pair of TCP listeners on the white: `public_port` for Internet clients and
// `data_port` for that gray's pool. The data side is where strangers can knock, so every socket
// there is unverified until its 60-byte preamble arrives in time, names the gray's current
// session, comes from the control connection's address (unless that check is off), carries a
// valid tag and a fresh counter within the granted credits. Only then does the broker see it.
import net, { type Server, type Socket } from 'node:net';
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import { listenOn, stopListening } from '../listen.js';
import type { EventSink } from '../../hooks/events.js';
import type { Limits } from '../../limits.js';
import type { Logger } from '../../log.js';
import type { GrayEntry } from '../../config/types.js';
import { normalizeIp } from '../net-util.js';
import { parsePreamble, PREAMBLE_BYTES, preambleTagValid, PreambleReader } from '../protocol/preamble.js';
import type { RateLimitedLog } from '../../rate-limited-log.js';
import { newGrayStats, type GrayStats } from '../stats.js';
import type { GraySession } from './gray-session.js';
import { PoolBroker, type Gate } from './pool-broker.js';

export interface EndpointContext {
  readonly bind: string;
  readonly dataSourceCheck: boolean;
  readonly limits: Readonly<Limits>;
  readonly logger: Logger;
  readonly events: EventSink;
  readonly warnings: RateLimitedLog;
  readonly clientGate: Gate | null;
  /** Counts a rejected socket by reason (data-port and public-port rejections). */
  readonly countRejection: (code: ErrorCode) => void;
}

export class GrayEndpoint {
  readonly stats: GrayStats = newGrayStats();
  readonly broker: PoolBroker;
  private readonly publicServer: Server;
  private readonly dataServer: Server;
  private unverified = 0;

  constructor(
    private current: GrayEntry,
    private readonly ctx: EndpointContext,
  ) {
    const entry = current;
    this.broker = new PoolBroker(entry.id, this.stats, ctx.limits, ctx.logger, ctx.events, (s, c, d) => this.reject(s, c, d), ctx.clientGate);
    // pauseOnConnect: a client's bytes stay in the kernel until it is paired, so a waiting
    // client costs no user-space buffer.
    this.publicServer = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => this.broker.onClient(s));
    this.dataServer = net.createServer({ allowHalfOpen: true }, (s) => this.onDataConnection(s));
  }

  get entry(): GrayEntry {
    return this.current;
  }

  /** Same id and ports, new secret: the listeners and clients stay. */
  replaceEntry(entry: GrayEntry): void {
    this.current = entry;
  }

  async listen(): Promise<void> {
    await listenOn(this.dataServer, this.ctx.bind, this.entry.dataPort, `data_port of ${this.entry.id}`);
    try {
      await listenOn(this.publicServer, this.ctx.bind, this.entry.publicPort, `public_port of ${this.entry.id}`);
    } catch (err) {
      this.dataServer.close();
      throw err;
    }
  }

  /** The ports actually bound (differs from the entry when it asked for port 0, as tests do). */
  get ports(): { publicPort: number; dataPort: number } {
    return { publicPort: portOf(this.publicServer, this.entry.publicPort), dataPort: portOf(this.dataServer, this.entry.dataPort) };
  }

  attach(session: GraySession): void {
    this.broker.attach(session);
    this.stats.connectedSince = session.connectedAt;
    this.stats.remoteAddress = session.remoteIp;
  }

  detach(session: GraySession, reason: string): void {
    if (this.broker.currentSession !== session) return;
    this.broker.detach(session);
    this.stats.connectedSince = null;
    this.stats.lastError = reason;
  }

  /** Stop accepting on both ports; with closeActive, also cut the clients (gray deleted). */
  close(closeActive: boolean): void {
    this.broker.close(closeActive);
    stopListening(this.publicServer);
    stopListening(this.dataServer);
  }

  private onDataConnection(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    // With data_source_check on, only the current session's control address can open a valid
    // data connection, and that is known before a single byte arrives. Refusing everyone else
    // here keeps strangers out of the unverified slots: before, a flood from any address could
    // fill them and the gray's own replacement dials were refused, starving the pool.
    if (this.ctx.dataSourceCheck) {
      const session = this.broker.currentSession;
      if (!session) return this.reject(socket, ErrorCodes.PREAMBLE_UNKNOWN_SESSION, `gray ${this.entry.id} has no current session`);
      const source = normalizeIp(socket.remoteAddress);
      if (source !== session.remoteIp) {
        return this.reject(socket, ErrorCodes.PREAMBLE_WRONG_SOURCE, `data connection from ${source}, control connection from ${session.remoteIp}`);
      }
    }
    if (this.unverified >= this.ctx.limits.unverifiedDataPerPort) {
      return this.reject(socket, ErrorCodes.TOO_MANY_UNAUTHENTICATED, `${this.unverified} unverified data connections, limit ${this.ctx.limits.unverifiedDataPerPort}`);
    }
    this.unverified += 1;
    const reader = new PreambleReader();
    let settled = false;
    const settle = (): void => {
      if (settled) return;
      settled = true;
      this.unverified -= 1;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', settle);
    };
    const fail = (code: ErrorCode, detail: string): void => {
      settle();
      this.reject(socket, code, detail);
    };
    const timer = setTimeout(() => fail(ErrorCodes.PREAMBLE_TIMEOUT, `no complete preamble within ${this.ctx.limits.preambleTimeoutMs} ms`), this.ctx.limits.preambleTimeoutMs);
    const onData = (chunk: Buffer): void => {
      let preamble: Buffer | null;
      try {
        preamble = reader.push(chunk);
      } catch (err) {
        return fail(ErrorCodes.PREAMBLE_INVALID, err instanceof Error ? err.message : String(err));
      }
      if (!preamble) return;
      const verdict = this.verify(socket, preamble);
      if (verdict.ok) {
        settle();
        this.broker.addIdle(socket, verdict.session);
      } else {
        fail(verdict.code, verdict.detail);
      }
    };
    // The data port is allowHalfOpen, so a peer's FIN alone never closes the socket: without
    // this, a stranger could connect, send FIN and go away, and its slot among the unverified
    // stayed taken until the preamble deadline. A FIN before the preamble ends the attempt.
    const onEnd = (): void => fail(ErrorCodes.PREAMBLE_INVALID, `connection ended after ${reader.receivedBytes} of ${PREAMBLE_BYTES} preamble bytes`);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.on('close', settle);
  }

  private verify(socket: Socket, preamble: Buffer): { ok: true; session: GraySession } | { ok: false; code: ErrorCode; detail: string } {
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
    const source = normalizeIp(socket.remoteAddress);
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

  private reject(socket: Socket, code: ErrorCode, detail: string): void {
    socket.destroy();
    this.ctx.countRejection(code);
    this.ctx.warnings.warn(`${this.entry.id}:${code}`, { gray: this.entry.id, code, remote: socket.remoteAddress, detail }, 'connection refused');
  }
}

function portOf(server: Server, fallback: number): number {
  const address = server.address();
  return address && typeof address === 'object' ? address.port : fallback;
}
