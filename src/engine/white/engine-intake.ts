// A gray's ports on an engine's listeners. The engine accepts, applies the source filter and the
// unverified cap before a byte is read, reads exactly the 60-byte preamble under its deadline,
// and holds the connection; only then does JavaScript see it, to verify the preamble (the same
// checks as node-intake.ts, in GrayEndpoint.verify) and hand it to the broker. No Node socket
// is made for any of it. Each service has its own public port, whose allow-list the engine
// applies at accept; a public port can be lent idle data connections (Lender).
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import type { WhiteService } from '../../config/types.js';
import { deepEqual } from '../../config/diff.js';
import type { Engine } from '../substrate/engine.js';
import type { HeldConn } from '../substrate/held-conn.js';
import { EngineListener, type EngineConn, type ListenerFilter, type Refusal } from '../substrate/listener.js';
import { normalizeIp } from '../net-util.js';
import { PREAMBLE_BYTES, PREAMBLE_MAGIC, PreambleReader } from '../protocol/preamble.js';
import type { GrayEndpoint } from './gray-endpoint.js';
import type { IntakePorts, IntakeSettings, Lender, PortIntake } from './port-intake.js';

interface PublicPort {
  readonly listener: EngineListener;
  /** The service it was opened for (its configured port and allow-list). */
  service: WhiteService;
}

export class EngineIntake implements PortIntake, Lender {
  private data: EngineListener | null = null;
  private readonly publics = new Map<string, PublicPort>();
  /** What the engine's listeners were given at bind; it cannot change them afterwards. */
  private boundWith: { preambleTimeoutMs: number; keepAliveDelayMs: number } | null = null;

  constructor(
    private readonly engine: Engine,
    private readonly s: IntakeSettings,
    private readonly endpoint: GrayEndpoint,
  ) {}

  lend(conn: HeldConn, service: string, index: number): boolean {
    return this.publics.get(service)?.listener.lend(conn as EngineConn, index) ?? false;
  }

  joinLent(client: HeldConn, service: string, onNone: () => void): void {
    const port = this.publics.get(service);
    if (port) port.listener.joinLent(client as EngineConn, onNone);
    else onNone();
  }

  async listen(): Promise<void> {
    const { s } = this;
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
      { onConnection: (conn, preamble) => this.onDataConnection(conn, preamble), onRefused: (r, remote, d) => this.onRefused(r, remote, d), onError: this.onError('data_port') },
      `data_port of ${s.grayId}`,
    );
    this.sessionChanged();
    try {
      for (const service of s.services) this.openPublic(service);
    } catch (err) {
      this.close();
      this.data = null;
      throw err;
    }
    this.boundWith = { preambleTimeoutMs: s.preambleTimeoutMs, keepAliveDelayMs: s.keepAliveDelayMs };
  }

  async servicesChanged(): Promise<void> {
    if (!this.data) return;
    const wanted = new Map(this.s.services.map((x) => [x.name, x]));
    for (const [name, port] of this.publics) {
      const next = wanted.get(name);
      if (next && next.publicPort === port.service.publicPort) continue;
      port.listener.close();
      this.publics.delete(name);
    }
    let failure: unknown = null;
    for (const service of this.s.services) {
      const port = this.publics.get(service.name);
      if (port) {
        if (!deepEqual(port.service.allow, service.allow)) port.listener.setAllow(service.allow);
        port.service = service;
        continue;
      }
      try {
        this.openPublic(service);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure) throw failure;
  }

  private openPublic(service: WhiteService): void {
    const { s, endpoint } = this;
    const listener = new EngineListener(
      this.engine,
      { host: s.bind, port: service.publicPort, prefixBytes: 0, prefixTimeoutMs: 0, keepAliveSec: s.clientKeepAliveMs > 0 ? Math.max(1, Math.round(s.clientKeepAliveMs / 1000)) : 0, watch: 'reset', allow: service.allow },
      {
        onConnection: (conn) => endpoint.broker.onClient(conn, service.name),
        onJoinedLent: (client, data, take) => endpoint.broker.onJoinedLent(client, data, take, service.name),
        onRefused: (refusal, remote) => {
          if (refusal === 'not-allowed') endpoint.refuseNotAllowed(service.name, remote);
        },
        onError: this.onError(`public_port of service ${service.name}`),
      },
      `public_port of service ${service.name} of ${s.grayId}`,
    );
    this.publics.set(service.name, { listener, service });
  }

  private onError(which: string): (error: Error) => void {
    return (error) => this.endpoint.listenerTrouble(`${which} of ${this.s.grayId}: ${error.message}; accepting again shortly`);
  }

  fixedAtBind(): string[] {
    const fixed: string[] = [];
    if (!this.boundWith) return fixed;
    if (this.boundWith.preambleTimeoutMs !== this.s.preambleTimeoutMs) fixed.push('limits.preamble_timeout_ms');
    if (this.boundWith.keepAliveDelayMs !== this.s.keepAliveDelayMs) fixed.push('limits.keep_alive_delay_ms');
    return fixed;
  }

  get ports(): IntakePorts {
    const publicPorts: Record<string, number> = {};
    for (const service of this.s.services) publicPorts[service.name] = this.publics.get(service.name)?.listener.port ?? service.publicPort;
    const first = this.s.services[0];
    return { publicPort: first ? (publicPorts[first.name] ?? 0) : 0, dataPort: this.data?.port ?? this.s.dataPort, publicPorts };
  }

  sessionChanged(): void {
    const session = this.endpoint.broker.currentSession;
    const filter: ListenerFilter = !this.s.dataSourceCheck ? { mode: 'anyone' } : session ? { mode: 'only', ip: session.remoteIp } : { mode: 'nobody' };
    this.data?.setFilter(filter, this.s.unverifiedLimit);
  }

  close(): void {
    for (const port of this.publics.values()) port.listener.close();
    this.publics.clear();
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
      case 'not-allowed':
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
