// The port pair on the native engine's listeners (the splice data plane with an IP bind
// address). The engine accepts, applies the source filter and the unverified cap before a byte
// is read, reads exactly the 60-byte preamble under its deadline, and holds the connection;
// only then does JavaScript see it, to verify the preamble (the same checks as node-intake.ts,
// in GrayEndpoint.verify) and hand it to the broker. No Node socket is made for any of it.
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import { NativeListener, type EngineConn, type ListenerFilter, type Refusal } from '../data-plane/native-listener.js';
import { normalizeIp } from '../net-util.js';
import { PREAMBLE_BYTES, PREAMBLE_MAGIC, PreambleReader } from '../protocol/preamble.js';
import type { IntakeOwner, Lender, PortIntake } from './port-intake.js';

export class NativeIntake implements PortIntake {
  private data: NativeListener | null = null;
  private public: NativeListener | null = null;

  constructor(private readonly owner: IntakeOwner) {}

  readonly lender: Lender = {
    lend: (conn) => this.public?.lend(conn as EngineConn) ?? false,
    pairLent: (client, onNone) => (this.public ? this.public.pairLent(client as EngineConn, onNone) : onNone()),
  };

  async listen(): Promise<void> {
    const o = this.owner;
    const onError = (which: string) => (error: Error): void => o.listenerTrouble(`${which} of ${o.grayId}: ${error.message}; accepting again shortly`);
    this.data = new NativeListener(
      {
        host: o.bind,
        port: o.dataPort,
        prefixBytes: PREAMBLE_BYTES,
        prefixMagic: PREAMBLE_MAGIC,
        prefixTimeoutMs: o.preambleTimeoutMs,
        keepAliveSec: Math.max(1, Math.round(o.keepAliveDelayMs / 1000)),
        watch: 'any',
      },
      { onConnection: (conn, preamble) => this.onDataConnection(conn, preamble), onRefused: (r, remote, d) => this.onRefused(r, remote, d), onError: onError('data_port') },
      `data_port of ${o.grayId}`,
    );
    this.sessionChanged();
    try {
      this.public = new NativeListener(
        { host: o.bind, port: o.publicPort, prefixBytes: 0, prefixTimeoutMs: 0, keepAliveSec: o.clientKeepAliveMs > 0 ? Math.max(1, Math.round(o.clientKeepAliveMs / 1000)) : 0, watch: 'reset' },
        { onConnection: (conn) => o.onClient(conn), onPaired: (client, data, adopt) => o.onLentPaired(client, data, adopt), onRefused: () => {}, onError: onError('public_port') },
        `public_port of ${o.grayId}`,
      );
    } catch (err) {
      this.data.close();
      throw err;
    }
  }

  get ports(): { publicPort: number; dataPort: number } {
    return { publicPort: this.public?.port ?? this.owner.publicPort, dataPort: this.data?.port ?? this.owner.dataPort };
  }

  sessionChanged(): void {
    const o = this.owner;
    const session = o.currentSession();
    const filter: ListenerFilter = !o.dataSourceCheck ? { mode: 'anyone' } : session ? { mode: 'only', ip: session.remoteIp } : { mode: 'nobody' };
    this.data?.setFilter(filter, o.unverifiedLimit);
  }

  close(): void {
    this.public?.close();
    this.data?.close();
  }

  private onDataConnection(conn: EngineConn, preamble: Buffer): void {
    const verdict = this.owner.verify(conn.remoteAddress, preamble);
    if (verdict.ok) this.owner.onVerified(conn, verdict.session);
    else this.owner.refuse(conn, conn.remoteAddress, verdict.code, verdict.detail);
  }

  private onRefused(refusal: Refusal, remoteIp: string, detail: { received: Buffer }): void {
    const reason = this.refusalReason(refusal, remoteIp, detail.received);
    if (reason) this.owner.refuse(null, remoteIp, reason[0], reason[1]);
  }

  /** The code and words for a refusal; built only for the one that happened (a flood of
   *  strangers makes one per connection). A socket error before the preamble is simply closed,
   *  as with Node's listeners. */
  private refusalReason(refusal: Refusal, remoteIp: string, received: Buffer): [ErrorCode, string] | null {
    const o = this.owner;
    switch (refusal) {
      case 'no-session':
        return [ErrorCodes.PREAMBLE_UNKNOWN_SESSION, `gray ${o.grayId} has no current session`];
      case 'wrong-source':
        return [ErrorCodes.PREAMBLE_WRONG_SOURCE, `data connection from ${normalizeIp(remoteIp)}, control connection from ${o.currentSession()?.remoteIp ?? 'none'}`];
      case 'too-many':
        return [ErrorCodes.TOO_MANY_UNAUTHENTICATED, `unverified data connections at the limit of ${o.unverifiedLimit}`];
      case 'timeout':
        return [ErrorCodes.PREAMBLE_TIMEOUT, `no complete preamble within ${o.preambleTimeoutMs} ms`];
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
