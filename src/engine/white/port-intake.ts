// How connections arrive on one gray's ports: its data port and one public port per service.
// With an engine, its listeners accept, filter and read the preamble (engine-intake.ts); on the
// JS plane, Node's listeners do (node-intake.ts). Both hand the same checks to GrayEndpoint
// (verify, the allow-lists' refusals) and the same held connections to the pool broker.
import type { ErrorCode } from '../../errors.js';
import type { WhiteService } from '../../config/types.js';
import type { PoolPairInfo } from '../substrate/engine.js';
import type { HeldConn } from '../substrate/held-conn.js';
import type { GraySession } from './gray-session.js';

export type Verdict = { ok: true; session: GraySession } | { ok: false; code: ErrorCode; detail: string };

/** What an intake is told about its ports. bind is an IP address with an engine. */
export interface IntakeSettings {
  readonly grayId: string;
  readonly bind: string;
  /** The gray's services now: read again by servicesChanged after a reload. */
  readonly services: readonly WhiteService[];
  readonly dataPort: number;
  readonly dataSourceCheck: boolean;
  /** TCP keepalive delay on public-port client sockets; 0: none. */
  readonly clientKeepAliveMs: number;
  readonly preambleTimeoutMs: number;
  readonly keepAliveDelayMs: number;
  readonly unverifiedLimit: number;
}

/** Pairing in the engine (native/lend.cc): the engine keeps the gray's verified idle
 *  connections and joins clients with them by itself, reporting each pair (onJoinedLent) and its
 *  end (onPoolPairEnd). The engine keeps the pairs (native/pool-pairs.cc): JavaScript counts
 *  them, and asks for the live ones when it needs them. */
export interface Lender {
  /** The id the client's events share (UUID-shaped, unique in this process). */
  connectionId(clientConn: number): string;
  /** The engine's id of a held client. */
  connOf(client: HeldConn): number;
  /** Closes a pooled connection (one the broker had by addLent) that is no longer wanted. */
  closeLent(conn: number): void;
  /** The gray's idle timeout, enforced by the engine on its pairs (null: none). */
  setIdleTimeout(ms: number | null): void;
  /** The gray's pairs running now, asked of the engine. */
  /** The live pairs of every public port, each with its port's service. */
  pairs(): Array<PoolPairInfo & { readonly service: string }>;
  /** Ends every running pair (each end is still reported). */
  destroyPairs(): void;
  /** Ends one pair (its end is still reported). */
  destroyPair(pair: number): void;
  /** Joins a client JavaScript admitted with a pooled connection now, or as soon as one is
   *  verified; until then it waits in the engine (JavaScript keeps the waiting limits). */
  admit(client: HeldConn): void;
  /** How many of the gray's pairs may run before clients stop being joined at accept, without
   *  JavaScript (the active-client limit; 0 while an authorize hook must see every client). */
  setActiveLimit(limit: number): void;
  /** The gray's index for each service now (undefined: not known yet, or the gray lacks it):
   *  the engine writes it in the start headers of that service's clients, and joins no client
   *  of a service without one (they reach JavaScript). */
  setServiceIndexes(indexOf: (service: string) => number | undefined): void;
}

export interface IntakePorts {
  /** The first service's bound port (the single-service form's public_port). */
  readonly publicPort: number;
  readonly dataPort: number;
  /** Bound public port by service name. */
  readonly publicPorts: Record<string, number>;
}

export interface PortIntake {
  listen(): Promise<void>;
  /** The ports actually bound (they differ from the entry's when it asked for port 0). */
  readonly ports: IntakePorts;
  /** The gray's session changed: who may open data connections changes with it. */
  sessionChanged(): void;
  /** The services changed (a reload): public ports of new services are opened, those of removed
   *  ones closed (their active clients stay), allow-lists replaced. Rejects with the first port
   *  that cannot be had; the rest is applied. */
  servicesChanged(): Promise<void>;
  /** Stops accepting on every port. */
  close(): void;
  /** Settings ("limits.x") whose current value the bound listeners do not have: they took it
   *  when they were bound and keep it until they are bound again. */
  fixedAtBind?(): string[];
}
