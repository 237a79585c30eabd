// Who may open a control connection before authenticating. Strangers can cost us a TLS
// handshake each, so: a hard cap per source IP, a total cap with early random refusal past half
// of it (the MaxStartups idea from OpenSSH: a flood degrades gracefully instead of locking out
// everyone at once), and a penalty per source IP after failed logins that doubles with each
// failure, during which that IP's new connections are refused before any TLS work.
import type { Limits } from '../../limits.js';

export type AdmissionRefusal = 'per_ip_limit' | 'total_limit' | 'early_drop' | 'penalty';

const MAX_TRACKED_PENALTIES = 10_000;

export class Admission {
  private readonly perIp = new Map<string, number>();
  private total = 0;
  private readonly penalties = new Map<string, { failures: number; until: number }>();

  constructor(
    private readonly limits: Readonly<Limits>,
    private readonly random: () => number = Math.random,
  ) {}

  /** Returns null when admitted (the caller must call release once), or why not. */
  admit(ip: string, now = Date.now()): AdmissionRefusal | null {
    const penalty = this.penalties.get(ip);
    if (penalty && now < penalty.until) return 'penalty';
    const mine = this.perIp.get(ip) ?? 0;
    if (mine >= this.limits.unauthenticatedPerIp) return 'per_ip_limit';
    const limit = this.limits.unauthenticatedTotal;
    if (this.total >= limit) return 'total_limit';
    const half = Math.floor(limit / 2);
    if (this.total >= half && this.random() < (this.total - half + 1) / (limit - half + 1)) return 'early_drop';
    this.perIp.set(ip, mine + 1);
    this.total += 1;
    return null;
  }

  release(ip: string): void {
    const mine = this.perIp.get(ip);
    if (mine === undefined) return;
    if (mine <= 1) this.perIp.delete(ip);
    else this.perIp.set(ip, mine - 1);
    this.total -= 1;
  }

  /** Records a failed login and returns the penalty now in force for that IP (ms). */
  recordFailure(ip: string, now = Date.now()): number {
    const previous = this.penalties.get(ip);
    const failures = (previous?.failures ?? 0) + 1;
    const penaltyMs = Math.min(this.limits.authFailurePenaltyMaxMs, this.limits.authFailurePenaltyBaseMs * 2 ** (failures - 1));
    if (!previous && this.penalties.size >= MAX_TRACKED_PENALTIES) this.prune(now);
    this.penalties.set(ip, { failures, until: now + penaltyMs });
    return penaltyMs;
  }

  recordSuccess(ip: string): void {
    this.penalties.delete(ip);
  }

  get unauthenticated(): number {
    return this.total;
  }

  private prune(now: number): void {
    for (const [ip, p] of this.penalties) if (p.until <= now) this.penalties.delete(ip);
    // Still full of live penalties (a large distributed attack): forget the oldest half rather
    // than grow without bound.
    if (this.penalties.size >= MAX_TRACKED_PENALTIES) {
      let drop = this.penalties.size / 2;
      for (const ip of this.penalties.keys()) {
        if (drop-- <= 0) break;
        this.penalties.delete(ip);
      }
    }
  }
}
