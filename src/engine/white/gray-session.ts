// The white's view of one authenticated gray control session: its keys (never sent), the
// counter window for its data connections, and the credits it has been granted. A session lives
// from successful auth until its control channel closes; data connections are accepted only
// while it is the gray's current session.
import { randomBytes } from 'node:crypto';
import type { ControlChannel } from '../control-channel.js';
import { MessageType } from '../protocol/messages.js';
import { CounterWindow } from '../protocol/replay-window.js';

export class GraySession {
  readonly sessionId = randomBytes(16);
  readonly window = new CounterWindow();
  readonly connectedAt = Date.now();
  /** Grant times of credits not yet matched by an arriving data connection, oldest first. */
  private readonly outstanding: number[] = [];
  private grantScheduled = false;
  /** The gray's service table (its SERVICES): a name's position is the index the start header
   *  carries. Null until the gray has sent it; clients wait meanwhile. */
  private grayTable: Map<string, number> | null = null;

  constructor(
    readonly grayId: string,
    readonly channel: ControlChannel,
    readonly remoteIp: string,
    readonly dataKey: Buffer,
    /** Idle pool size this session keeps (the gray's wish, capped by the white's limit). */
    readonly poolTarget: number,
    private readonly creditTtlMs: number,
    /** The session's data connections carry one client after another: the gray offered it (its
     *  HELLO) and the white's intake is an engine, which frames them and takes each back into
     *  the pool after its pair (native/engine.h, Framing). */
    readonly reuse = false,
  ) {}

  /**
   * The idle count below which a join is worth a successor credit. Connections used once are
   * replaced at once, so the pool stays at its target. With reuse each one comes back after its
   * pair: with successors only below half the target, a pool under a steady load (clients one
   * after another, or many at a time) takes back as many as it gives out and dials none for its
   * clients, and still keeps half its target idle while long pairs hold the rest; arrivals above
   * the target are closed as surplus (pool-broker.ts).
   */
  get refillLevel(): number {
    return this.reuse ? Math.ceil(this.poolTarget / 2) : this.poolTarget;
  }

  /**
   * Credits granted but not yet used. A credit whose connection never arrived (the gray's dial
   * failed after it wrote the preamble, or it is backing off) stops counting after a TTL, so a
   * lost credit cannot stall the pool; the counter itself stays valid in the window.
   */
  inFlight(now = Date.now()): number {
    while (this.outstanding.length > 0 && now - this.outstanding[0]! > this.creditTtlMs) this.outstanding.shift();
    return this.outstanding.length;
  }

  /** When the oldest credit in flight stops counting, or null when none is in flight. */
  msUntilOldestCreditExpires(now = Date.now()): number | null {
    const oldest = this.outstanding[0];
    return oldest === undefined ? null : Math.max(0, oldest + this.creditTtlMs - now);
  }

  /** The gray's SERVICES: its table, positions comma-separated ('' where a service was removed). */
  setGrayTable(list: string): void {
    const table = new Map<string, number>();
    list.split(',').forEach((name, i) => {
      if (name !== '') table.set(name, i);
    });
    this.grayTable = table;
  }

  get grayServicesKnown(): boolean {
    return this.grayTable !== null;
  }

  /** The gray's names, or null before its SERVICES. */
  get grayServices(): string[] | null {
    return this.grayTable === null ? null : [...this.grayTable.keys()];
  }

  /** The index of a service in the gray's table; undefined: the gray does not have it. */
  slotOf(name: string): number | undefined {
    return this.grayTable?.get(name);
  }

  /** A verified data connection arrived: it used the oldest outstanding credit. */
  creditUsed(): void {
    this.outstanding.shift();
  }

  /**
   * Credits come two ways, and the window's limit is their sum:
   * - explicit: WELCOME's initial credits and cumulative GRANT { up_to } messages, which count
   *   explicit credits only;
   * - implicit: every start header the white writes is worth one replacement credit. Both sides
   *   count these themselves (the white when it pairs, the gray when it is activated), so the
   *   gray replaces a used connection at once, with no control message and no round trip. The
   *   gray's count can never run ahead of the white's, because the white counts first.
   */
  private explicit = 0;
  private implicit = 0;

  /** Hears the explicit credit limit whenever it grows (an engine checks the window itself). */
  private creditSink: ((explicitUpTo: number) => void) | null = null;

  /** Sends the explicit credit limit to sink now and at every growth (the engine's window). */
  onExplicitCredits(sink: (explicitUpTo: number) => void): void {
    this.creditSink = sink;
    sink(this.explicit);
  }

  /** Extend the explicit credits by n; the GRANT goes out once per event-loop turn, so a burst
   *  of waiting clients costs one TLS record. */
  grant(n: number, now = Date.now()): void {
    if (n <= 0 || this.channel.isClosed) return;
    this.explicit += n;
    this.creditSink?.(this.explicit);
    this.extendWindow(n, now);
    if (this.grantScheduled) return;
    this.grantScheduled = true;
    setImmediate(() => {
      this.grantScheduled = false;
      this.channel.send({ type: MessageType.GRANT, upTo: this.explicit });
    });
  }

  /** A pooled connection was paired: its start header is the gray's replacement credit. */
  grantImplicit(now = Date.now()): void {
    this.implicit += 1;
    this.extendWindow(1, now);
  }

  /** Initial credits go out in WELCOME rather than as a GRANT. */
  grantInitial(n: number, now = Date.now()): number {
    this.explicit = n;
    this.creditSink?.(this.explicit);
    this.extendWindow(n, now);
    return this.explicit;
  }

  private extendWindow(n: number, now: number): void {
    this.window.grant(this.explicit + this.implicit);
    for (let i = 0; i < n; i++) this.outstanding.push(now);
  }
}
