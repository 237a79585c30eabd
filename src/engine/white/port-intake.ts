// How connections arrive on one gray's ports: its data port and one public port per service.
// With an engine, its listeners accept, filter and read the preamble (engine-intake.ts); on the
// JS plane, Node's listeners do (node-intake.ts). Both hand the same checks to GrayEndpoint
// (verify, the allow-lists' refusals) and the same held connections to the pool broker.
import type { ErrorCode } from '../../errors.js';
import type { WhiteService } from '../../config/types.js';
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

/** Pairing in the engine (native/lend.cc): an idle, verified connection lent to a service's
 *  public port is joined with the next client there without JavaScript. */
export interface Lender {
  /** False when it cannot be lent (the port is not listening): keep it. index: the service's
   *  position in the gray's table, which the engine writes in the start header. */
  lend(conn: HeldConn, service: string, index: number): boolean;
  /** Joins an admitted client with a lent connection (reported by onJoinedLent), or onNone. */
  joinLent(client: HeldConn, service: string, onNone: () => void): void;
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
