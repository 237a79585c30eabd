// Who may open a control connection before authenticating. Strangers can cost us a TLS
// handshake each, so: a hard cap per source IP, a total cap with early random refusal past half
// of it (the MaxStartups idea from OpenSSH: a flood degrades gracefully instead of locking out
// everyone at once), and a penalty per source IP and gray id after failed logins that doubles
// with each failure, during which that id's logins from that IP are refused at HELLO, before any
// proof is computed. Per IP and id, not per IP: many grays share one address behind a NAT, and one
// of them with a wrong secret (or not yet known to the white) must not lock out the others.
import type { Limits } from '../../limits.js';

export type AdmissionRefusal = 'per_ip_limit' | 'total_limit' | 'early_drop';

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
  admit(ip: string): AdmissionRefusal | null {
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

  /** The ms left of the penalty on logins as `id` from `ip` (0: none). */
  penaltyLeft(ip: string, id: string, now = Date.now()): number {
    const penalty = this.penalties.get(penaltyKey(ip, id));
    return penalty && now < penalty.until ? penalty.until - now : 0;
  }

  /** Records a failed login as `id` from `ip` and returns the penalty now in force for that pair (ms). */
  recordFailure(ip: string, id: string, now = Date.now()): number {
    const key = penaltyKey(ip, id);
    const previous = this.penalties.get(key);
    const failures = (previous?.failures ?? 0) + 1;
    const penaltyMs = Math.min(this.limits.authFailurePenaltyMaxMs, this.limits.authFailurePenaltyBaseMs * 2 ** (failures - 1));
    if (!previous && this.penalties.size >= MAX_TRACKED_PENALTIES) this.prune(now);
    this.penalties.set(key, { failures, until: now + penaltyMs });
    return penaltyMs;
  }

  recordSuccess(ip: string, id: string): void {
    this.penalties.delete(penaltyKey(ip, id));
  }

  get unauthenticated(): number {
    return this.total;
  }

  private prune(now: number): void {
    for (const [key, p] of this.penalties) if (p.until <= now) this.penalties.delete(key);
    // Still full of live penalties (a large distributed attack): forget the oldest half rather
    // than grow without bound.
    if (this.penalties.size >= MAX_TRACKED_PENALTIES) {
      let drop = this.penalties.size / 2;
      for (const key of this.penalties.keys()) {
        if (drop-- <= 0) break;
        this.penalties.delete(key);
      }
    }
  }
}

/** Ids are 1 to 64 characters without NUL, so the pair cannot collide with another. */
function penaltyKey(ip: string, id: string): string {
  return `${ip}\0${id}`;
}
