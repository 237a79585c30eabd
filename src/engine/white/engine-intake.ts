// A gray's ports on an engine's listeners. The engine accepts, applies the source filter and the
// unverified cap before a byte is read, reads exactly the 60-byte preamble under its deadline,
// checks it on its own thread (session, source, HMAC tag, counter window within the credits:
// native/verify.cc, with the keys and credit limit handed over here) and holds the connection;
// JavaScript sees only verified connections, which go to the broker, and the refusals, which it
// counts and logs. No Node socket is made for any of it. The verified connections stay in the
// engine's pool for the gray, which joins clients with them by itself (Lender). Each service has
// its own public port, whose allow-list the engine applies at accept; every public port of the
// gray uses the one pool, and its start headers name the service by the gray's index.
import { randomUUID } from 'node:crypto';
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import type { WhiteService } from '../../config/types.js';
import { deepEqual } from '../../config/diff.js';
import type { Engine, PoolPairInfo } from '../substrate/engine.js';
import type { HeldConn } from '../substrate/held-conn.js';
import type { GoneReason } from '../substrate/events.js';
import { EngineListener, type EngineConn, type ListenerFilter, type Refusal } from '../substrate/listener.js';
import { normalizeIp } from '../net-util.js';
import { parsePreamble, PREAMBLE_BYTES, PREAMBLE_MAGIC, PreambleReader } from '../protocol/preamble.js';
import type { GrayEndpoint } from './gray-endpoint.js';
import type { GraySession } from './gray-session.js';
import type { IntakePorts, IntakeSettings, Lender, PortIntake } from './port-intake.js';

interface PublicPort {
  readonly listener: EngineListener;
  /** The service it was opened for (its configured port and allow-list). */
  service: WhiteService;
}

export class EngineIntake implements PortIntake, Lender {
  private data: EngineListener | null = null;
  private readonly publics = new Map<string, PublicPort>();
  private readonly retired: PublicPort[] = [];
  /** The session whose keys the data port has, and its number there (0: none). */
  private keyed: GraySession | null = null;
  private epoch = 0;
  /** The gray's index for each service (Lender.setServiceIndexes), kept for ports opened later. */
  private indexOf: (service: string) => number | undefined = () => undefined;
  /** What the engine's listeners were given at bind; it cannot change them afterwards. */
  private boundWith: { preambleTimeoutMs: number; keepAliveDelayMs: number } | null = null;

  constructor(
    private readonly engine: Engine,
    private readonly s: IntakeSettings,
    private readonly endpoint: GrayEndpoint,
  ) {}

  /** The pool's active-pair limit and idle timeout, kept for a data port bound later. */
  private activeLimit = 0;
  private idleTimeoutMs: number | null = null;
  /** Connection ids are this, then the engine's id of the client: UUID-shaped, random per
   *  intake, so no JavaScript string is kept per pair to report its end under the same id. */
  private readonly idPrefix = randomUUID().slice(0, 28);

  admit(client: HeldConn): void {
    this.data?.admit(client as EngineConn);
  }

  setActiveLimit(limit: number): void {
    this.activeLimit = limit;
    this.data?.setActiveLimit(limit);
  }

  connectionId(clientConn: number): string {
    return this.idPrefix + (clientConn >>> 0).toString(16).padStart(8, '0');
  }

  connOf(client: HeldConn): number {
    return (client as EngineConn).id;
  }

  setIdleTimeout(ms: number | null): void {
    this.idleTimeoutMs = ms;
    this.data?.setIdleTimeout(ms);
  }

  pairs(): Array<PoolPairInfo & { readonly service: string }> {
    return this.portsWithPairs().flatMap((port) => port.listener.poolPairs().map((p) => ({ ...p, service: port.service.name })));
  }

  destroyPairs(): void {
    for (const port of this.portsWithPairs()) port.listener.destroyPoolPairs();
  }

  /** A closed public port's pairs run on (a drain, a service removed by reload): it stays
   *  reachable for their live bytes and the drain deadline until its last pair has ended. */
  private retire(port: PublicPort): void {
    port.listener.close();
    this.retired.push(port);
  }

  private portsWithPairs(): PublicPort[] {
    for (let i = this.retired.length - 1; i >= 0; i--) {
      if (this.retired[i]!.listener.poolPairs().length === 0) this.retired.splice(i, 1);
    }
    return [...this.publics.values(), ...this.retired];
  }

  destroyPair(pair: number): void {
    this.engine.handle.destroy(pair);
  }

  setServiceIndexes(indexOf: (service: string) => number | undefined): void {
    this.indexOf = indexOf;
    for (const [name, port] of this.publics) this.pointAtPool(port.listener, name);
  }

  /** A public port's clients are joined from the gray's pool, their start headers naming the
   *  service's index; without an index, none is (they reach JavaScript, which waits). */
  private pointAtPool(listener: EngineListener, service: string): void {
    const index = this.indexOf(service);
    listener.usePool(index === undefined ? null : this.data, index ?? 0);
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
      {
        // Every connection of the data port is verified (it has a session from the start).
        onConnection: (conn) => conn.destroy(),
        onVerified: (conn, epoch, reused) => this.onVerified(conn, epoch, reused),
        onGone: (conn, reason, remoteIp) => this.onLentGone(conn, reason, remoteIp),
        onRefused: (r, remote, d) => this.onRefused(r, remote, d),
        onError: this.onError('data_port'),
      },
      `data_port of ${s.grayId}`,
    );
    this.keyed = null;  // a new listener has no session's keys yet
    this.sessionChanged();
    this.data.setActiveLimit(this.activeLimit);
    this.data.setIdleTimeout(this.idleTimeoutMs);
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
      this.retire(port);
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
        onJoinedLent: (joined, client) => endpoint.broker.onJoinedLent(joined, client, service.name),
        onPoolPairEnd: (end) => endpoint.broker.onPoolPairEnd(end, service.name),
        onRefused: (refusal, remote) => {
          if (refusal === 'not-allowed') endpoint.refuseNotAllowed(service.name, remote);
        },
        onError: this.onError(`public_port of service ${service.name}`),
      },
      `public_port of service ${service.name} of ${s.grayId}`,
    );
    this.publics.set(service.name, { listener, service });
    this.pointAtPool(listener, service.name);
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
    if (!this.data || session === this.keyed) return;
    // A new session (or none): the engine checks against its keys from now on, in a new window.
    this.keyed = session;
    const data = this.data;
    if (!session) return data.setSession(0, null);
    const epoch = (this.epoch = nextEpoch());
    data.setSession(epoch, Buffer.concat([session.sessionId, session.dataKey]), session.reuse ? session.refillLevel : null);
    session.onExplicitCredits((upTo) => data.setCredits(epoch, upTo));
  }

  close(): void {
    for (const port of this.publics.values()) this.retire(port);
    this.publics.clear();
    this.data?.close();
  }

  /** Verified by the engine, or back after its pair (reused); one of a session that ended
   *  meanwhile has nowhere to go. */
  private onVerified(conn: number, epoch: number, reused: boolean): void {
    const session = this.keyed;
    if (session && epoch === this.epoch) this.endpoint.broker.addLent(conn, session, reused);
    else this.data?.closeConn(conn);
  }

  closeLent(conn: number): void {
    this.data?.closeConn(conn);
  }

  /** A pooled connection went away: it leaves the pool; one that spoke broke the protocol. */
  private onLentGone(conn: number, reason: GoneReason, remoteIp: string): void {
    if (!this.endpoint.broker.lentGone(conn)) return;
    if (reason === 'data') this.endpoint.refuse(null, remoteIp, ErrorCodes.PREAMBLE_INVALID, 'data before the start header');
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
      case 'bad-counter':
        return [ErrorCodes.PREAMBLE_INVALID, counterProblem(received)];
      case 'other-session':
        return [ErrorCodes.PREAMBLE_UNKNOWN_SESSION, 'preamble names no current session of this gray'];
      case 'bad-tag':
        return [ErrorCodes.PREAMBLE_INVALID, 'preamble tag does not verify'];
      case 'replay':
        return [ErrorCodes.PREAMBLE_REPLAY, `counter ${counterOf(received)} already used`];
      case 'no-credit':
        return [ErrorCodes.PREAMBLE_NO_CREDIT, `counter ${counterOf(received)} beyond granted ${this.keyed?.window.granted ?? 0}`];
    }
  }
}

/** Session epochs: one number per session handed to an engine, unique in the process. */
let epochs = 0;
const nextEpoch = (): number => (epochs = (epochs % 0xffff_ffff) + 1);

/** The counter of a preamble the engine found well-formed. */
function counterOf(preamble: Buffer): number {
  return parsePreamble(preamble).counter;
}

/** The words the JS plane uses for a counter out of range (parsePreamble's). */
function counterProblem(preamble: Buffer): string {
  try {
    parsePreamble(preamble);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  return 'preamble counter out of range';
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
