// The port pair on an engine's listeners. The engine accepts, applies the source filter and the
// unverified cap before a byte is read, reads exactly the 60-byte preamble under its deadline,
// and holds the connection; only then does JavaScript see it, to verify the preamble (the same
// checks as node-intake.ts, in GrayEndpoint.verify) and hand it to the broker. No Node socket
// is made for any of it. The public port can be lent idle data connections (Lender).
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import type { Engine } from '../substrate/engine.js';
import type { HeldConn } from '../substrate/held-conn.js';
import { EngineListener, type EngineConn, type ListenerFilter, type Refusal } from '../substrate/listener.js';
import { normalizeIp } from '../net-util.js';
import { PREAMBLE_BYTES, PREAMBLE_MAGIC, PreambleReader } from '../protocol/preamble.js';
import type { GrayEndpoint } from './gray-endpoint.js';
import type { IntakeSettings, Lender, PortIntake } from './port-intake.js';

export class EngineIntake implements PortIntake, Lender {
  private data: EngineListener | null = null;
  private public: EngineListener | null = null;

  constructor(
    private readonly engine: Engine,
    private readonly s: IntakeSettings,
    private readonly endpoint: GrayEndpoint,
  ) {}

  lend(conn: HeldConn): boolean {
    return this.public?.lend(conn as EngineConn) ?? false;
  }

  joinLent(client: HeldConn, onNone: () => void): void {
    if (this.public) this.public.joinLent(client as EngineConn, onNone);
    else onNone();
  }

  async listen(): Promise<void> {
    const { s, endpoint } = this;
    const onError = (which: string) => (error: Error): void => endpoint.listenerTrouble(`${which} of ${s.grayId}: ${error.message}; accepting again shortly`);
    this.data = new EngineListener(
      this.engine,
      {
        host: s.bind,
        port: s.dataPort,
        prefixBytes: PREAMBLE_BYTES,
        prefixMagic: PREAMBLE_MAGIC,
        prefixTimeoutMs: s.preambleTimeoutMs,
        keepAliveSec: Math.max(1, Math.round(s.keepAliveDelayMs / 1000)),
        watch: 'any',
      },
      { onConnection: (conn, preamble) => this.onDataConnection(conn, preamble), onRefused: (r, remote, d) => this.onRefused(r, remote, d), onError: onError('data_port') },
      `data_port of ${s.grayId}`,
    );
    this.sessionChanged();
    try {
      this.public = new EngineListener(
        this.engine,
        { host: s.bind, port: s.publicPort, prefixBytes: 0, prefixTimeoutMs: 0, keepAliveSec: s.clientKeepAliveMs > 0 ? Math.max(1, Math.round(s.clientKeepAliveMs / 1000)) : 0, watch: 'reset' },
        {
          onConnection: (conn) => endpoint.broker.onClient(conn),
          onJoinedLent: (client, data, take) => endpoint.broker.onJoinedLent(client, data, take),
          onRefused: () => {},
          onError: onError('public_port'),
        },
        `public_port of ${s.grayId}`,
      );
    } catch (err) {
      this.data.close();
      throw err;
    }
  }

  get ports(): { publicPort: number; dataPort: number } {
    return { publicPort: this.public?.port ?? this.s.publicPort, dataPort: this.data?.port ?? this.s.dataPort };
  }

  sessionChanged(): void {
    const session = this.endpoint.broker.currentSession;
    const filter: ListenerFilter = !this.s.dataSourceCheck ? { mode: 'anyone' } : session ? { mode: 'only', ip: session.remoteIp } : { mode: 'nobody' };
    this.data?.setFilter(filter, this.s.unverifiedLimit);
  }

  close(): void {
    this.public?.close();
    this.data?.close();
  }

  private onDataConnection(conn: EngineConn, preamble: Buffer): void {
    const verdict = this.endpoint.verify(conn.remoteAddress, preamble);
    if (verdict.ok) this.endpoint.broker.addIdle(conn, verdict.session);
    else this.endpoint.refuse(conn, conn.remoteAddress, verdict.code, verdict.detail);
  }

  private onRefused(refusal: Refusal, remoteIp: string, detail: { received: Buffer }): void {
    const reason = this.refusalReason(refusal, remoteIp, detail.received);
    if (reason) this.endpoint.refuse(null, remoteIp, reason[0], reason[1]);
  }

  /** The code and words for a refusal; built only for the one that happened (a flood of
   *  strangers makes one per connection). A socket error before the preamble is simply closed,
   *  as with Node's listeners. */
  private refusalReason(refusal: Refusal, remoteIp: string, received: Buffer): [ErrorCode, string] | null {
    const s = this.s;
    switch (refusal) {
      case 'no-session':
        return [ErrorCodes.PREAMBLE_UNKNOWN_SESSION, `gray ${s.grayId} has no current session`];
      case 'wrong-source':
        return [ErrorCodes.PREAMBLE_WRONG_SOURCE, `data connection from ${normalizeIp(remoteIp)}, control connection from ${this.endpoint.broker.currentSession?.remoteIp ?? 'none'}`];
      case 'too-many':
        return [ErrorCodes.TOO_MANY_UNAUTHENTICATED, `unverified data connections at the limit of ${s.unverifiedLimit}`];
      case 'timeout':
        return [ErrorCodes.PREAMBLE_TIMEOUT, `no complete preamble within ${s.preambleTimeoutMs} ms`];
      case 'ended':
        return [ErrorCodes.PREAMBLE_INVALID, `connection ended after ${received.length} of ${PREAMBLE_BYTES} preamble bytes`];
      case 'bad-magic':
        return [ErrorCodes.PREAMBLE_INVALID, magicProblem(received)];
      case 'extra':
        return [ErrorCodes.PREAMBLE_INVALID, 'bytes right after the preamble, expected none before the start header'];
      case 'error':
        return null;
    }
  }
}

/** The same words Node's intake uses for a wrong first byte (the preamble reader's). */
function magicProblem(received: Buffer): string {
  try {
    new PreambleReader().push(received);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  return 'preamble magic does not match';
}
