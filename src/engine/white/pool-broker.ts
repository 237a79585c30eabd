// Pairs each Internet client with one verified, idle data connection of its gray: the pool
// broker. It holds the idle pool, the bounded queue of clients waiting for a connection, and the
// active pairs; it decides when to grant the gray more credits (consumed, closed or recycled
// connections are replaced at once; waiting clients that nothing idle or in flight will reach ask
// for extra, within the in-flight cap: creditsWanted).
// It never sees an unverified connection: GrayEndpoint (or, with an engine, the engine) verifies
// preambles before addIdle (addLent). Connections are held connections: ones an engine holds, or
// Node sockets on the JS plane; an engine's idle connections are only ids here.
// With an engine (its intake is a Lender) the idle connections and the waiting clients are in the
// engine's pool, which joins them by itself (onJoinedLent): a client at accept while the gray's
// pairs are below activeClientsPerGray (none while an authorize hook must see each client), a
// client admitted here (lender.admit) at once or when the next connection is verified; the
// engine writes each start header with the index the gray gave the client's service (told by
// servicesChanged: until the gray's table is known, no client is joined). This
// broker then keeps the books: credits, the idle count and recycle timers, the waiting clients'
// limits (queue length, wait time), the active pairs. The engine's pairs are the engine's alone
// (native/pool-pairs.cc): the broker counts them from their start and end events, which carry
// all their end reports, asks the engine for the live ones (bytes, draining) and hands it the
// gray's idle timeout. Only the JS plane's pairs, which have sockets anyway, are objects here.
// A live pair therefore costs no JavaScript memory with an engine.
import { randomUUID } from 'node:crypto';
import { formatHostPort } from '../../config/address.js';
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import type { EventSink } from '../../hooks/events.js';
import type { Limits } from '../../limits.js';
import type { Logger } from '../../log.js';
import type { GrayStats } from '../stats.js';
import type { HeldConn } from '../substrate/held-conn.js';
import { pairError } from '../substrate/engine.js';
import type { JoinedLent, PoolPairEnd } from '../substrate/listener.js';
import type { Pair, OnPairEnd } from '../substrate/pair.js';
import { clientAddressInfo, encodeStartHeader, type ClientAddressInfo } from '../protocol/start-header.js';
import { newServiceStats, type ServiceStats } from '../stats.js';
import type { GraySession } from './gray-session.js';
import type { Lender } from './port-intake.js';

interface IdleConnection {
  readonly conn: HeldConn;
  readonly session: GraySession;
  /** performance.now() when it became idle: it is recycled poolIdleMaxMs later (recycle()). */
  readonly since: number;
}

interface WaitingClient {
  readonly conn: HeldConn;
  readonly id: string;
  readonly service: string;
  /** performance.now() when it started waiting. */
  readonly since: number;
  /** Its addresses, for the start header (JS plane; null with an engine, which builds its own). */
  readonly info: ClientAddressInfo | null;
  readonly timer: NodeJS.Timeout;
}

export interface ActivePair {
  readonly id: string;
  /** Side a is the client, side b the data connection. */
  readonly joined: Pair;
  /** Bytes the data socket had read before pairing (the preamble), not client traffic. */
  readonly preambleBytes: number;
  readonly clientAddress: string;
  readonly service: string;
}

/**
 * Decides whether a client may connect (the optional authorize hook). Returns null, synchronously,
 * when there is nothing to decide, so a connection pays for an async hop only when a hook is on.
 */
export type Gate = (grayId: string, remoteAddress: string, connectionId?: string) => Promise<{ allow: boolean; reason: string }> | null;

/** The gray's optional idle timeout: read at each check (JS plane) or handed to the engine at
 *  each change, so a reload applies to running pairs. */
export interface IdleTimeout {
  timeoutMs(): number | null;
  /** A pair was reset for it (client address, how long it had been idle). */
  onTimeout(client: string, idleMs: number): void;
}

/** How often pairs are checked for idleness: a quarter of the timeout, within bounds that keep
 *  the check cheap for long timeouts. A byte is seen at the check after it, so a pair ends after
 *  at least the timeout of silence and at most the timeout plus two checks. */
const idleCheckMs = (timeoutMs: number): number => Math.min(5_000, Math.max(25, Math.floor(timeoutMs / 4)));

interface Activity {
  bytes: number;
  since: number;
}

/**
 * How many more credits the pool needs. The connections idle or in flight serve the waiting
 * clients first, and each client served brings its own replacement (its start header's implicit
 * credit), so the pool ends at idle + in flight whoever waits: it needs target - (idle + in
 * flight) for itself, and extra credits only for the clients that nothing idle or in flight will
 * reach, which would otherwise wait for a chain of replacements. Granting one per waiting client
 * regardless would bring that many connections more than the pool wants once the waiters are
 * served (closed on arrival as surplus: a dial, a preamble check and two closes for nothing).
 * returning: reused data connections in pairs, which come back to the pool when their pairs end:
 * they count toward the target, not toward the waiting clients (a pair may last).
 */
export function creditsWanted(target: number, idle: number, inFlight: number, waiting: number, returning = 0): number {
  const supply = idle + inFlight;
  return Math.max(0, target - supply - returning) + Math.max(0, waiting - supply);
}

export class PoolBroker {
  private session: GraySession | null = null;
  private readonly idle: IdleConnection[] = [];
  private readonly waiting: WaitingClient[] = [];
  /** The JS plane's pairs; the engine's are only counted (enginePairs). */
  private readonly active = new Set<ActivePair>();
  private enginePairs = 0;
  private readonly drainWaiters: (() => void)[] = [];
  private lender: Lender | null = null;
  /** Idle connections in the engine's pool, by id, in arrival order, with when each became idle
   *  (performance.now()): no object per connection. They come back only by being closed. */
  private readonly lent = new Map<number, number>();
  private closed = false;
  private expiryTimer: NodeJS.Timeout | null = null;
  /** Active pairs' last seen byte total and since when (for the idle timeout). */
  private readonly activity = new Map<ActivePair, Activity>();
  private idleTimer: NodeJS.Timeout | null = null;
  /** One timer for recycling the idle connections, due when the oldest is (not one per
   *  connection: a timer is garbage, and nearly every idle connection is used long before). */
  private recycleTimer: NodeJS.Timeout | null = null;
  private readonly endedIdle = new Set<ActivePair>();
  /** Engine pairs joined after close: ended at once and not reported (by client connection). */
  private readonly ignoredEnds = new Set<number>();

  constructor(
    readonly grayId: string,
    private readonly stats: GrayStats,
    private readonly limits: Readonly<Limits>,
    private readonly logger: Logger,
    private readonly events: EventSink,
    private readonly reject: (conn: HeldConn, code: ErrorCode, detail: string, service?: string) => void,
    private readonly clientGate: Gate | null = null,
    private readonly clientGateDeciding: () => boolean = () => clientGate !== null,
    private readonly idleTimeout: IdleTimeout | null = null,
  ) {}

  get currentSession(): GraySession | null {
    return this.session;
  }

  /** The intake can pair in the engine (an engine's intake). */
  useLender(lender: Lender): void {
    this.lender = lender;
    lender.setActiveLimit(this.joinAtAcceptLimit());
    lender.setIdleTimeout(this.idleTimeout?.timeoutMs() ?? null);
  }

  /** Active pairs, of either plane. */
  get activeCount(): number {
    return this.active.size + this.enginePairs;
  }

  /** How many pairs may run before the engine stops joining clients at accept: the active-client
   *  limit, and none while an authorize hook must see every client first. */
  private joinAtAcceptLimit(): number {
    return this.clientGateDeciding() ? 0 : this.limits.activeClientsPerGray;
  }

  private idleCount(): number {
    return this.idle.length + this.lent.size;
  }

  /** Install a freshly authenticated session; the previous one (if any) is already detached. */
  attach(session: GraySession): void {
    this.session = session;
    this.stats.poolTarget = session.poolTarget;
    this.stats.poolRefill = session.refillLevel;
    // The new session's indexes come with the gray's SERVICES (servicesChanged).
    this.lender?.setServiceIndexes(() => undefined);
  }

  /** The session ended: its idle connections die with it; waiting clients keep waiting for a
   *  new session until their own deadline, active pairs are untouched. */
  detach(session: GraySession): void {
    if (this.session !== session) return;
    this.session = null;
    this.lender?.setServiceIndexes(() => undefined);
    this.clearExpiryTimer();
    this.stats.poolTarget = 0;
    this.stats.poolRefill = 0;
    this.dropAllIdle();
    this.stats.poolIdle = 0;
  }

  /** A verified data connection of the current session in the engine's pool (the lender's): a
   *  waiting client has taken it already if there was one (its onJoinedLent comes next).
   *  reused: one back after its pair, which used no credit. */
  addLent(data: number, session: GraySession, reused = false): void {
    const lender = this.lender!;
    if (this.closed || session !== this.session) return lender.closeLent(data);
    if (reused) this.stats.dataConnectionsReused += 1;
    else session.creditUsed();
    // The surplus after a burst is closed on arrival (see addIdle), whether it is new or back.
    if (this.idleCount() >= session.poolTarget && this.waiting.length === 0) return lender.closeLent(data);
    // While idle the gray must stay silent: the engine watches it for any byte, FIN or reset
    // (lentGone), and it is replaced as when it is recycled.
    this.lent.set(data, performance.now());
    this.stats.poolIdle = this.idleCount();
    this.recycleLater();
    this.topUp();
  }

  /** A pooled connection of the engine's went away; false if it was not in the pool any more. */
  lentGone(data: number): boolean {
    if (!this.lent.delete(data)) return false;
    this.stats.poolIdle = this.idleCount();
    this.topUp();
    return true;
  }

  /** A verified data connection of the current session (JS plane). */
  addIdle(data: HeldConn, session: GraySession): void {
    if (this.closed || session !== this.session) {
      data.destroy();
      return;
    }
    session.creditUsed();
    const waiting = this.nextWaiting();
    if (waiting) {
      this.unwait(waiting);
      this.stats.clientWait.observe((performance.now() - waiting.since) / 1000);
      this.pair(waiting.conn, data, waiting.id, waiting.service, waiting.info!);
      this.topUp();
      return;
    }
    // A burst of waiting clients beyond what was idle or in flight was granted extra credits, and
    // each one served also brought its implicit replacement, so after such a burst more
    // connections arrive than the pool needs (as after clients that waited and left). Credits
    // cannot be taken back; the surplus is closed on arrival (the gray closes its side on our FIN)
    // and, the pool being full, nothing replaces it.
    if (this.idleCount() >= session.poolTarget && this.waiting.length === 0) {
      data.destroy();
      return;
    }
    // While idle the gray must stay silent: any byte is a protocol violation, and a FIN or reset
    // means the connection is gone. Either way it leaves the pool and a replacement is granted,
    // as when it has been idle too long (recycled).
    const conn: IdleConnection = { conn: data, session, since: performance.now() };
    data.watch('any', (reason) => {
      if (reason === 'data') this.reject(data, ErrorCodes.PREAMBLE_INVALID, 'data before the start header');
      this.leaveIdle(conn);
    });
    this.idle.push(conn);
    this.stats.poolIdle = this.idleCount();
    this.recycleLater();
    // WELCOME's credits are capped by inFlightMax, so a pool target above the cap is reached by
    // granting more as connections arrive, still within the cap.
    this.topUp();
  }

  /** An idle connection left the pool (gone, or recycled): a replacement is granted. */
  private leaveIdle(conn: IdleConnection): void {
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
    this.stats.poolIdle = this.idleCount();
    this.topUp();
  }

  /** When the oldest idle connection became idle: the first of lent (engine) or idle (JS
   *  plane), both in arrival order (the JS plane takes the newest from the end). */
  private oldestIdleSince(): number | undefined {
    return this.lent.size > 0 ? this.lent.values().next().value : this.idle[0]?.since;
  }

  /** Arms the recycle timer for the oldest idle connection, unless it is armed. */
  private recycleLater(): void {
    if (this.recycleTimer) return;
    const oldest = this.oldestIdleSince();
    if (oldest === undefined) return;
    const inMs = Math.max(0, oldest + this.limits.poolIdleMaxMs - performance.now());
    this.recycleTimer = setTimeout(() => {
      this.recycleTimer = null;
      this.recycle();
    }, Math.ceil(inMs));
    this.recycleTimer.unref();
  }

  /** Closes the connections idle for poolIdleMaxMs (each is replaced, as any that leaves). */
  private recycle(): void {
    const due = performance.now() - this.limits.poolIdleMaxMs;
    for (const [data, since] of this.lent) {
      if (since > due) break;
      this.lent.delete(data);
      this.lender!.closeLent(data);
    }
    while (this.idle.length > 0 && this.idle[0]!.since <= due) {
      const oldest = this.idle.shift()!;
      oldest.conn.destroy();
    }
    this.stats.poolIdle = this.idleCount();
    this.topUp();
    this.recycleLater();
  }

  private clearRecycleTimer(): void {
    if (this.recycleTimer) clearTimeout(this.recycleTimer);
    this.recycleTimer = null;
  }

  /** An Internet client connected to the public port of one of the gray's services. */
  onClient(client: HeldConn, service: string): void {
    if (this.closed) return void client.destroy();
    if (!this.session) return this.reject(client, ErrorCodes.GRAY_OFFLINE, `gray ${this.grayId} is not connected`, service);
    if (this.missingOnGray(service)) return this.refuseMissing(client, service);
    if (this.activeCount >= this.limits.activeClientsPerGray) {
      return this.reject(client, ErrorCodes.TOO_MANY_CLIENTS, `${this.activeCount} active clients, limit ${this.limits.activeClientsPerGray}`, service);
    }
    // The id exists before the gate so the authorize hook and the client.* events share it.
    const id = this.lender ? this.lender.connectionId(this.lender.connOf(client)) : randomUUID();
    const decision = this.clientGate?.(this.grayId, formatHostPort({ host: client.remoteAddress ?? '', port: client.remotePort ?? 0 }), id);
    if (decision) {
      decision.then(
        (d) => (d.allow ? this.admitClient(client, id, service) : this.reject(client, ErrorCodes.HOOK_DENIED, d.reason, service)),
        (err: unknown) => this.reject(client, ErrorCodes.HOOK_DENIED, String(err), service),
      );
      return;
    }
    this.admitClient(client, id, service);
  }

  /** The gray told this session which services it has, and this one is not among them. */
  private missingOnGray(service: string): boolean {
    return this.session !== null && this.session.grayServicesKnown && this.session.slotOf(service) === undefined;
  }

  private refuseMissing(client: HeldConn, service: string): void {
    this.reject(client, ErrorCodes.SERVICE_NOT_ON_GRAY, `gray ${this.grayId} has no service ${service} in its file`, service);
  }

  private admitClient(client: HeldConn, id: string, service: string): void {
    if (client.destroyed) return;
    // The engine builds the start header from the addresses it has.
    if (this.lender) return this.wait(client, id, service, null);
    // Addresses first: a client that reset right after connecting has none any more. It is simply
    // gone; it must not take a pooled connection (and must not throw out of this handler).
    const info = addressesOf(client);
    if (!info) return void client.destroy();
    this.admitHere(client, id, service, info);
  }

  /** The engine joined a client (one it accepted, or one admitted here) with a pooled
   *  connection (one closed here meanwhile, such as by its recycle timer, is no longer in lent).
   *  The pair is the engine's; this counts and reports it. */
  onJoinedLent(joined: JoinedLent, client: HeldConn | undefined, service: string): void {
    this.lent.delete(joined.lent);
    this.stats.poolIdle = this.idleCount();
    const waiting = client ? this.waiting.find((w) => w.conn === client) : undefined;
    if (waiting) this.unwait(waiting);
    this.enginePairs += 1;
    if (this.closed) {
      this.ignoredEnds.add(joined.client);
      return this.lender?.destroyPair(joined.pair);
    }
    this.stats.clientWait.observe(waiting ? (performance.now() - waiting.since) / 1000 : 0);
    if (joined.credit) this.session?.grantImplicit();
    this.stats.clientsTotal += 1;
    this.stats.activeClients = this.activeCount;
    const perService = this.serviceStats(service);
    perService.clientsTotal += 1;
    perService.activeClients += 1;
    // The report's strings are made only for someone who reads them (most clients have nobody).
    const debug = this.logger.isLevelEnabled('debug');
    if (debug || this.wanted('client.connected')) {
      const clientAddress = formatHostPort({ host: joined.remote.ip, port: joined.remote.port });
      const id = this.lender!.connectionId(joined.client);
      this.events.emit('client.connected', { grayId: this.grayId, service, connectionId: id, clientAddress });
      if (debug) this.logger.debug({ gray: this.grayId, conn: id, client: clientAddress }, 'client paired');
    }
    this.topUp();
  }

  /** The end of a pair the engine joined, with all it reports. */
  onPoolPairEnd(end: PoolPairEnd, service: string): void {
    this.enginePairs -= 1;
    this.stats.activeClients = this.activeCount;
    if (this.ignoredEnds.delete(end.client)) return this.pairEnded();
    const perService = this.serviceStats(service);
    perService.activeClients -= 1;
    perService.bytesFromClients += end.bytesFromClient;
    perService.bytesToClients += end.bytesToClient;
    this.stats.bytesFromClients += end.bytesFromClient;
    this.stats.bytesToClients += end.bytesToClient;
    const report = this.logger.isLevelEnabled('debug') || this.wanted('client.disconnected');
    if (end.endedIdle || report) {
      const clientAddress = formatHostPort({ host: end.remote.ip, port: end.remote.port });
      if (end.endedIdle) this.idleTimeout?.onTimeout(clientAddress, end.idleMs);
      const error = end.endedIdle ? null : pairError(end.errno);
      if (report) this.reportEnd(this.lender!.connectionId(end.client), service, clientAddress, end.bytesFromClient, end.bytesToClient, end.ageMs, end.endedIdle ? 'idle timeout' : error ? error.message : 'closed');
    }
    this.pairEnded();
  }

  private reportEnd(id: string, service: string, clientAddress: string, bytesFromClient: number, bytesToClient: number, durationMs: number, reason: string): void {
    this.events.emit('client.disconnected', { grayId: this.grayId, service, connectionId: id, clientAddress, bytesFromClient, bytesToClient, durationMs, reason });
    if (this.logger.isLevelEnabled('debug')) this.logger.debug({ gray: this.grayId, conn: id, client: clientAddress, bytesIn: bytesFromClient, bytesOut: bytesToClient, reason }, 'client closed');
  }

  /** Whether anyone takes this event now (a sink that cannot say takes them all). */
  private wanted(name: 'client.connected' | 'client.disconnected'): boolean {
    return this.events.wants?.(name) ?? true;
  }

  /** A pair of either plane ended: drained() may be waiting for the last one. */
  private pairEnded(): void {
    if (this.activeCount > 0) return;
    for (const resolve of this.drainWaiters.splice(0)) resolve();
  }

  /** Pairs with an idle connection that is not lent, or queues. Until the gray's table is known
   *  (its SERVICES follows WELCOME at once) clients queue too. */
  private admitHere(client: HeldConn, id: string, service: string, info: ClientAddressInfo): void {
    if (this.missingOnGray(service)) return this.refuseMissing(client, service);
    const conn = this.session?.grayServicesKnown ? this.takeIdle() : undefined;
    if (conn) {
      this.stats.clientWait.observe(0);
      this.pair(client, conn.conn, id, service, info);
      this.topUp();
      return;
    }
    this.wait(client, id, service, info);
  }

  /** Queues a client for the next verified connection: here (JS plane), or in the engine's pool
   *  (lender.admit), which may also join it at once. The limits are kept here either way. Until
   *  the gray's table is known, a client waits here even with an engine (its start header needs
   *  the service's index: servicesChanged hands it over). */
  private wait(client: HeldConn, id: string, service: string, info: ClientAddressInfo | null): void {
    if (this.waiting.length >= this.limits.pendingClientsPerGray) {
      return this.reject(client, ErrorCodes.CLIENT_QUEUE_FULL, `${this.waiting.length} clients waiting, limit ${this.limits.pendingClientsPerGray}`, service);
    }
    const waiting: WaitingClient = {
      conn: client,
      id,
      service,
      since: performance.now(),
      info,
      timer: setTimeout(() => {
        this.unwait(waiting);
        this.reject(client, ErrorCodes.CLIENT_WAIT_TIMEOUT, `no data connection within ${this.limits.clientWaitMs} ms`, service);
      }, this.limits.clientWaitMs),
    };
    // A reset makes the client leave the queue instead of later taking a connection. A FIN is
    // not a reason to leave: a client may half-close and still want its answer; its bytes and
    // its FIN are delivered once it is paired.
    client.watch('reset', () => this.unwait(waiting));
    this.waiting.push(waiting);
    this.stats.pendingClients = this.waiting.length;
    this.admitToEngine(waiting);
    this.topUp();
  }

  /** The first waiting client the gray can serve; those of a service it does not have are refused. */
  private nextWaiting(): WaitingClient | undefined {
    if (!this.session?.grayServicesKnown) return undefined;
    while (this.waiting.length > 0) {
      const w = this.waiting[0]!;
      if (!this.missingOnGray(w.service)) return w;
      this.unwait(w);
      this.refuseMissing(w.conn, w.service);
    }
    return undefined;
  }

  /** With an engine: a waiting client goes to the engine's pool once its service has an index
   *  there (the engine writes it in the start header). */
  private admitToEngine(waiting: WaitingClient): void {
    if (this.lender && this.indexOf(waiting.service) !== undefined) this.lender.admit(waiting.conn);
  }

  /** The gray's index for a service in this session, once the gray's table is known. */
  private indexOf(service: string): number | undefined {
    return this.session?.grayServicesKnown ? this.session.slotOf(service) : undefined;
  }

  /** The gray's table arrived or changed, the session did, or the white's services did (a
   *  reload): the engine is told each service's index (its start headers use them), and waiting
   *  clients are served or refused by the new table. With an engine every client still waiting
   *  is handed over again: one its pool passed over while its service had no index is joined
   *  now (one it still holds stays where it is in the queue). */
  servicesChanged(): void {
    this.lender?.setServiceIndexes((service) => this.indexOf(service));
    if (this.lender) {
      for (const w of [...this.waiting]) {
        if (this.missingOnGray(w.service)) {
          this.unwait(w);
          this.refuseMissing(w.conn, w.service);
        } else {
          this.admitToEngine(w);
        }
      }
      this.topUp();
      return;
    }
    for (let w = this.nextWaiting(); w !== undefined; w = this.nextWaiting()) {
      const conn = this.takeIdle();
      if (!conn) break;
      this.unwait(w);
      this.stats.clientWait.observe((performance.now() - w.since) / 1000);
      this.pair(w.conn, conn.conn, w.id, w.service, w.info!);
    }
    this.stats.poolIdle = this.idleCount();
    this.topUp();
  }

  private unwait(waiting: WaitingClient): void {
    clearTimeout(waiting.timer);
    waiting.conn.unwatch();
    const i = this.waiting.indexOf(waiting);
    if (i >= 0) this.waiting.splice(i, 1);
    this.stats.pendingClients = this.waiting.length;
    this.trimSurplus();
  }

  /** A connection that arrives while a client waits is kept for it, but that client may then
   *  leave unserved (before the gray's table came, say), or have been served already: with
   *  several engine threads JavaScript can hear of a connection verified on one thread before
   *  another thread's join of the client. So once no client waits, the idle connections above
   *  the pool's target are closed, the oldest first; nothing else would, before
   *  pool_idle_max_ms. */
  private trimSurplus(): void {
    if (!this.session || this.waiting.length > 0) return;
    let surplus = this.idleCount() - this.session.poolTarget;
    for (; surplus > 0 && this.idle.length > 0; surplus--) this.dropIdle(this.idle.shift()!);
    for (const data of this.lent.keys()) {
      if (surplus-- <= 0) break;
      this.lent.delete(data);
      this.lender!.closeLent(data);
    }
    this.stats.poolIdle = this.idleCount();
  }

  /** The authorize hook may have been switched on or off: the engine joins clients at accept
   *  only without one, so no client reaches the gray without the hook's word. */
  gatesChanged(): void {
    this.lender?.setActiveLimit(this.joinAtAcceptLimit());
  }

  /** The limits were reloaded (they are read at each use; the engine is told the active-client
   *  limit it keeps at accept). */
  limitsChanged(): void {
    this.lender?.setActiveLimit(this.joinAtAcceptLimit());
    this.clearRecycleTimer();  // pool_idle_max_ms may have changed
    this.recycleLater();
    this.topUp();
  }

  private dropAllIdle(): void {
    this.clearRecycleTimer();
    for (const conn of this.idle.splice(0)) this.dropIdle(conn);
    for (const data of this.lent.keys()) this.lender!.closeLent(data);
    this.lent.clear();
  }

  /** Newest first: the most recently verified connection is the likeliest to be alive. */
  private takeIdle(): IdleConnection | undefined {
    const conn = this.idle.pop();
    if (!conn) return undefined;
    this.stats.poolIdle = this.idleCount();
    conn.conn.unwatch();
    return conn;
  }

  private dropIdle(conn: IdleConnection): void {
    conn.conn.unwatch();
    conn.conn.destroy();
  }

  /** Called with the gray's table known and the service in it (missingOnGray checked). */
  private pair(client: HeldConn, data: HeldConn, id: string, service: string, info: ClientAddressInfo): void {
    // The data connection already read the gray's preamble; only what follows is the client's.
    // The start header goes to the gray ahead of the client's bytes, naming the service by the
    // gray's own index.
    const header = encodeStartHeader(info, this.session!.slotOf(service)!);
    this.track(client, data.preambleBytes, id, service, (onClosed) => client.joinWith(data, { toB: header }, onClosed));
  }

  /** A service's counters (created on first use: a reload may add services). */
  serviceStats(service: string): ServiceStats {
    return (this.stats.perService[service] ??= newServiceStats());
  }

  /** Counts, reports and keeps an active pair of the JS plane that join starts. */
  private track(client: HeldConn, preambleBytes: number, id: string, service: string, join: (onClosed: OnPairEnd) => Pair): void {
    this.session?.grantImplicit();
    const clientAddress = formatHostPort({ host: client.remoteAddress ?? '', port: client.remotePort ?? 0 });
    const startedAt = Date.now();
    const perService = this.serviceStats(service);
    this.stats.clientsTotal += 1;
    perService.clientsTotal += 1;
    perService.activeClients += 1;
    this.events.emit('client.connected', { grayId: this.grayId, service, connectionId: id, clientAddress });
    const debug = this.logger.isLevelEnabled('debug');
    if (debug) this.logger.debug({ gray: this.grayId, conn: id, client: clientAddress }, 'client paired');
    const joined = join((result) => {
      this.active.delete(pair);
      this.activity.delete(pair);
      const idled = this.endedIdle.delete(pair);
      this.stats.activeClients = this.activeCount;
      const toClient = result.bytesFromB - preambleBytes;
      this.stats.bytesFromClients += result.bytesFromA;
      this.stats.bytesToClients += toClient;
      perService.activeClients -= 1;
      perService.bytesFromClients += result.bytesFromA;
      perService.bytesToClients += toClient;
      this.reportEnd(id, service, clientAddress, result.bytesFromA, toClient, Date.now() - startedAt, idled ? 'idle timeout' : result.error ? result.error.message : 'closed');
      this.pairEnded();
    });
    const pair: ActivePair = { id, joined, preambleBytes, clientAddress, service };
    this.active.add(pair);
    this.stats.activeClients = this.activeCount;
    if (this.idleTimeout) {
      this.activity.set(pair, { bytes: preambleBytes, since: startedAt });
      this.checkIdleLater();
    }
  }

  /** The gray's entry was replaced (a reload): its idle timeout may have been switched on. */
  settingsChanged(): void {
    this.lender?.setIdleTimeout(this.idleTimeout?.timeoutMs() ?? null);
    this.checkIdleLater();
  }

  private checkIdleLater(): void {
    const timeoutMs = this.idleTimeout?.timeoutMs();
    if (this.idleTimer || !timeoutMs || this.activity.size === 0) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      this.checkIdle();
    }, idleCheckMs(timeoutMs));
    this.idleTimer.unref();
  }

  /** Resets pairs with no byte either way for the idle timeout (live counts of both planes). */
  private checkIdle(): void {
    const timeoutMs = this.idleTimeout?.timeoutMs();
    if (!timeoutMs) return;
    const now = Date.now();
    for (const [pair, seen] of this.activity) {
      const bytes = pair.joined.bytesFromA() + pair.joined.bytesFromB();
      if (bytes !== seen.bytes) {
        seen.bytes = bytes;
        seen.since = now;
      } else if (now - seen.since >= timeoutMs) {
        this.activity.delete(pair);
        this.endedIdle.add(pair);
        this.idleTimeout!.onTimeout(pair.clientAddress, now - seen.since);
        pair.joined.destroy();
      }
    }
    this.checkIdleLater();
  }

  /**
   * Keep idle + in flight at the pool target plus one per waiting client, never more than the
   * in-flight cap outstanding. Called whenever any of those numbers moves.
   */
  topUp(): void {
    const session = this.session;
    if (!session || this.closed || session.channel.isClosed) return;
    const inFlight = session.inFlight();
    // A reused data connection in a pair comes back when the pair ends: it counts toward the
    // target (not toward the waiting clients, whose pairs may last), so taking one asks for no
    // GRANT, while one recycled or gone is replaced. The engine keeps the refill level idle
    // meanwhile by the credit of a join (GraySession.refillLevel).
    const returning = session.reuse ? this.enginePairs : 0;
    const allowed = Math.min(creditsWanted(session.poolTarget, this.idleCount(), inFlight, this.waiting.length, returning), this.limits.inFlightMax - inFlight);
    if (allowed > 0) session.grant(allowed);
    this.recheckWhenCreditsExpire(session);
  }

  /**
   * Credits in flight stop counting after their TTL, but nothing else happens at that moment: a
   * client waiting behind credits whose connections never came would only time out. While
   * anyone waits, look again when the oldest credit expires.
   */
  private recheckWhenCreditsExpire(session: GraySession): void {
    if (this.expiryTimer || this.waiting.length === 0) return;
    const inMs = session.msUntilOldestCreditExpires();
    if (inMs === null) return;
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = null;
      this.topUp();
    }, inMs + 1);
    this.expiryTimer.unref();
  }

  /** Bytes of pairs still open, for live statistics: in all and by service. */
  liveBytes(): { fromClients: number; toClients: number; byService: Map<string, { fromClients: number; toClients: number }> } {
    let fromClients = 0;
    let toClients = 0;
    const byService = new Map<string, { fromClients: number; toClients: number }>();
    for (const p of this.active) {
      const from = p.joined.bytesFromA();
      const to = p.joined.bytesFromB() - p.preambleBytes;
      fromClients += from;
      toClients += to;
      const s = byService.get(p.service) ?? { fromClients: 0, toClients: 0 };
      s.fromClients += from;
      s.toClients += to;
      byService.set(p.service, s);
    }
    if (this.enginePairs > 0) {
      for (const p of this.lender?.pairs() ?? []) {
        fromClients += p.fromClient;
        toClients += p.toClient;
        const s = byService.get(p.service) ?? { fromClients: 0, toClients: 0 };
        s.fromClients += p.fromClient;
        s.toClients += p.toClient;
        byService.set(p.service, s);
      }
    }
    return { fromClients, toClients, byService };
  }

  /** Stop pairing. Waiting clients and idle connections are closed; active pairs continue
   *  unless `closeActive` (the gray was deleted from the config). */
  close(closeActive: boolean): void {
    this.closed = true;
    this.clearExpiryTimer();
    if (closeActive) this.clearIdleTimer();
    this.dropAllIdle();
    for (const w of this.waiting.splice(0)) {
      clearTimeout(w.timer);
      w.conn.destroy();
    }
    this.stats.poolIdle = 0;
    this.stats.pendingClients = 0;
    if (closeActive) this.destroyActive();
  }

  private clearIdleTimer(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  private clearExpiryTimer(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
  }

  destroyActive(): void {
    for (const p of this.active) p.joined.destroy();
    if (this.enginePairs > 0) this.lender?.destroyPairs();
  }

  /** Resolves when no pair is active (for graceful shutdown). */
  drained(): Promise<void> {
    if (this.activeCount === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }
}

/** A client's addresses for its start header, or null when they are gone (it already reset). */
function addressesOf(client: HeldConn): ClientAddressInfo | null {
  if (!client.remoteAddress || !client.localAddress) return null;
  try {
    return clientAddressInfo({ address: client.remoteAddress, port: client.remotePort }, { address: client.localAddress, port: client.localPort });
  } catch {
    return null;
  }
}
