// The gray's sessions with all of its whites: one GrayAgent (control channel, pool, backoff,
// heartbeat) per white address, so a white that is down, slow or refusing costs the others
// nothing. `white:` lists addresses; a host name among them stands for every address it
// resolves to, and is resolved again every resolveIntervalMs: an address that appears gets a
// session, one that disappears has its session stopped (its active forwards finish). Nothing is
// shared between whites but the config.
import { lookup } from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { formatHostPort } from '../../config/address.js';
import type { GrayConfig, HostPort } from '../../config/types.js';
import type { Logger } from '../../log.js';
import { Backoff } from '../backoff.js';
import type { DataPlane } from '../substrate/data-plane.js';
import { deepEqual } from '../../config/diff.js';
import { GrayAgent, type WhiteSessionCounts, type WhiteSessionState, type WhiteTarget } from './agent.js';
import type { GrayStatus, GrayStatusSource } from './status.js';

/** Addresses of a host name, in the resolver's order of preference. */
export type ResolveHost = (host: string) => Promise<string[]>;

/** The system resolver (getaddrinfo: /etc/hosts, then DNS), as net.connect would use it. */
export const systemResolve: ResolveHost = async (host) => (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

/** The session a WhiteSessions holds per address; GrayAgent, or a stand-in in tests. */
export interface WhiteSession {
  start(): void;
  stop(drainMs?: number): Promise<void>;
  state(): WhiteSessionState;
  /** Counters for the status listener; a session without them counts as zero. */
  counts?(): WhiteSessionCounts;
  /** A reloaded file's services, for the next client (GrayAgent.applyServices). */
  applyServices?(next: GrayConfig): Promise<void>;
}

const NO_COUNTS: WhiteSessionCounts = { sessions: 0, reconnects: 0, forwardsTotal: 0, bytesToService: 0, bytesFromService: 0, serviceConnectFailures: 0 };

function addCounts(a: WhiteSessionCounts, b: WhiteSessionCounts): WhiteSessionCounts {
  return {
    sessions: a.sessions + b.sessions,
    reconnects: a.reconnects + b.reconnects,
    forwardsTotal: a.forwardsTotal + b.forwardsTotal,
    bytesToService: a.bytesToService + b.bytesToService,
    bytesFromService: a.bytesFromService + b.bytesFromService,
    serviceConnectFailures: a.serviceConnectFailures + b.serviceConnectFailures,
  };
}

export interface WhiteSessionsOptions {
  readonly resolve?: ResolveHost;
  /** The process's data plane, for the GrayAgents this builds. */
  readonly dataPlane: DataPlane;
  /** Builds one session; a GrayAgent by default. */
  /** config: the file as it is now (a reload that starts the sessions again passes the new one). */
  readonly createSession?: (white: WhiteTarget, logger: Logger, config: GrayConfig) => WhiteSession;
}

export interface WhiteSessionsEvents {
  /** A session was started for this address (host:port). */
  joined: [string];
  /** The session for this address was stopped: its address left DNS. */
  left: [string];
}

/** One configured `white:` entry: what was written, and the sessions it stands for now. */
interface Entry {
  readonly configured: HostPort;
  /** Dialed as written: an IP literal, or a single white pinned by data_host. */
  readonly literal: boolean;
  /** Addresses from the last successful resolution (for an IP literal, itself). */
  addresses: string[];
  lastError: string | null;
}

export class WhiteSessions extends EventEmitter<WhiteSessionsEvents> implements GrayStatusSource {
  private readonly sessions = new Map<string, WhiteSession>();
  /** Counters of sessions that left, so the gray's totals never go back. */
  private retired: WhiteSessionCounts = NO_COUNTS;
  private readonly entries: Entry[];
  private readonly resolve: ResolveHost;
  private readonly createSession: (white: WhiteTarget, logger: Logger, config: GrayConfig) => WhiteSession;
  /** Retries a failed resolution sooner than the period, capped by it. */
  private readonly resolveBackoff: Backoff;
  private timer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private config: GrayConfig,
    private readonly logger: Logger,
    options: WhiteSessionsOptions,
  ) {
    super();
    this.resolve = options.resolve ?? systemResolve;
    const { dataPlane } = options;
    this.createSession = options.createSession ?? ((white, log, current) => new GrayAgent(current, log, { white, dataPlane }));
    // data_host is only allowed with one white: it names that white's data address, so the
    // white is one machine and its name is dialed as written.
    const pinned = config.dataHost !== null;
    this.entries = config.whites.map((w) => ({ configured: w, literal: pinned || net.isIP(w.host) !== 0, addresses: [], lastError: null }));
    this.resolveBackoff = new Backoff(config.limits.reconnectBaseMs, config.resolveIntervalMs);
  }

  /** Resolves every name, starts a session per address, and keeps re-resolving on the period. */
  async start(): Promise<void> {
    await this.refresh();
  }

  /** Resolves now and joins or leaves whites to match; the next periodic refresh counts from here. */
  refresh(): Promise<void> {
    if (this.refreshing) return this.refreshing;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.refreshing = this.resolveAll()
      .then(() => this.apply())
      .finally(() => {
        this.refreshing = null;
        this.schedule();
      });
    return this.refreshing;
  }

  /** One row per white session, sorted by address. */
  state(): WhiteSessionState[] {
    return [...this.sessions.values()].map((s) => s.state()).sort((a, b) => (a.white < b.white ? -1 : a.white > b.white ? 1 : 0));
  }

  /** The gray's status for its status listener: one entry per white session, and the forwards
   *  of all of them (with those of sessions that have left). */
  status(): GrayStatus {
    let totals = this.retired;
    const whites = [...this.sessions.values()].map((session) => {
      const state = session.state();
      const counts = session.counts?.() ?? NO_COUNTS;
      totals = addCounts(totals, counts);
      return { state, counts };
    });
    whites.sort((a, b) => (a.state.white < b.state.white ? -1 : a.state.white > b.state.white ? 1 : 0));
    return {
      id: this.config.id,
      whites: whites.map(({ state, counts }) => ({ white: state.white, connected: state.connected, sessions: counts.sessions, reconnects: counts.reconnects, poolIdle: state.poolIdle, poolTarget: state.poolTarget })),
      activeForwards: whites.reduce((sum, w) => sum + w.state.activeForwards, 0),
      forwardsTotal: totals.forwardsTotal,
      bytesToService: totals.bytesToService,
      bytesFromService: totals.bytesFromService,
      serviceConnectFailures: totals.serviceConnectFailures,
    };
  }

  /** Configured names whose last resolution failed, with the reason. */
  resolveErrors(): Array<{ white: string; error: string }> {
    return this.entries.filter((e) => e.lastError !== null).map((e) => ({ white: formatHostPort(e.configured), error: e.lastError! }));
  }

  get size(): number {
    return this.sessions.size;
  }

  async stop(drainMs?: number): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    // A lookup still running is not waited for (DNS can be slow): apply() does nothing once stopped.
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map((s) => s.stop(drainMs)));
  }

  /**
   * A reloaded file. Whites, id, secret, data host or pool changed: every session starts again
   * with the new file (active forwards finish). Otherwise the sessions stay, and each takes the
   * new services for its next client (GrayAgent.applyServices). Resolves with what was done.
   */
  async applyConfig(next: GrayConfig): Promise<'reconnected' | 'services' | 'unchanged'> {
    const before = this.config;
    const identity = (c: GrayConfig): unknown[] => [c.whites, c.id, c.dataHost, c.pool, c.resolveIntervalMs, c.limits];
    if (!deepEqual(identity(before), identity(next)) || !before.secret.equals(next.secret)) {
      const all = [...this.sessions.values()];
      this.sessions.clear();
      // Their active forwards finish after this, as when a white leaves.
      for (const s of all) {
        this.retired = addCounts(this.retired, s.counts?.() ?? NO_COUNTS);
        void s.stop();
      }
      this.config = next;
      const pinned = next.dataHost !== null;
      this.entries.splice(0, this.entries.length, ...next.whites.map((w) => ({ configured: w, literal: pinned || net.isIP(w.host) !== 0, addresses: [], lastError: null })));
      await this.refresh();
      return 'reconnected';
    }
    this.config = next;
    if (deepEqual(before.services, next.services)) return 'unchanged';
    await Promise.all([...this.sessions.values()].map((s) => s.applyServices?.(next)));
    return 'services';
  }

  private async resolveAll(): Promise<void> {
    await Promise.all(
      this.entries.map(async (entry) => {
        if (entry.literal) {
          entry.addresses = [entry.configured.host];
          return;
        }
        const where = formatHostPort(entry.configured);
        try {
          const found = pickFamily(await this.resolve(entry.configured.host));
          if (found.length === 0) throw new Error('no addresses');
          if (entry.lastError !== null) this.logger.info({ white: where, addresses: found }, 'white name resolves again');
          entry.addresses = found;
          entry.lastError = null;
        } catch (err) {
          // A failed lookup keeps the sessions it had: a DNS hiccup must not drop live whites.
          const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
          if (entry.lastError !== reason) this.logger.warn({ white: where, reason, kept: entry.addresses.length }, 'cannot resolve white name; keeping its sessions');
          entry.lastError = reason;
        }
      }),
    );
  }

  private apply(): void {
    if (this.stopped) return;
    const wanted = new Map<string, WhiteTarget>();
    for (const entry of this.entries) {
      for (const host of entry.addresses) {
        const control = { host, port: entry.configured.port };
        const key = formatHostPort(control);
        // Two entries naming the same address are one white: two sessions with one id would
        // replace each other on it.
        if (!wanted.has(key)) wanted.set(key, { control, dataHost: this.config.dataHost });
      }
    }
    for (const [key, session] of this.sessions) {
      if (wanted.has(key)) continue;
      this.sessions.delete(key);
      this.logger.info({ white: key }, 'white left: its address is no longer resolved');
      // Its active forwards finish after this; what they carry then is not counted.
      this.retired = addCounts(this.retired, session.counts?.() ?? NO_COUNTS);
      void session.stop();
      this.emit('left', key);
    }
    for (const [key, target] of wanted) {
      if (this.sessions.has(key)) continue;
      const session = this.createSession(target, this.logger, this.config);
      this.sessions.set(key, session);
      this.logger.info({ white: key, sessions: this.sessions.size }, 'white joined');
      session.start();
      this.emit('joined', key);
    }
  }

  private schedule(): void {
    if (this.stopped || this.entries.every((e) => e.literal)) return;
    const failing = this.entries.some((e) => e.lastError !== null);
    if (!failing) this.resolveBackoff.reset();
    const delay = failing ? this.resolveBackoff.next() : this.config.resolveIntervalMs;
    // Kept referenced: a gray whose names do not resolve yet has nothing else keeping it alive.
    this.timer = setTimeout(() => void this.refresh(), delay);
  }
}

/**
 * The addresses of one family: IPv4 when the name has any, else IPv6. A white with both an A and
 * an AAAA record is one machine; a session per family would log in twice with one id and the two
 * sessions would replace each other there. IPv4 because a white listening on "0.0.0.0" takes only
 * IPv4 and one on "[::]" takes both (Linux dual-stack), as "localhost" resolving to ::1 first
 * must not leave a gray dialing a white that listens on 127.0.0.1.
 */
export function pickFamily(addresses: readonly string[]): string[] {
  const v4 = addresses.filter((a) => net.isIPv4(a));
  return [...new Set(v4.length > 0 ? v4 : addresses.filter((a) => net.isIPv6(a)))];
}
