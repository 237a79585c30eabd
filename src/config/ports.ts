// Port bookkeeping for the white config: every listener the white opens needs its own port, and
// relayctl add allocates new gray ports from a configured range without taking a used one.
import { ErrorCodes, RelayError } from '../errors.js';
import type { IssueList, PathSegment } from './issues.js';

export interface PortRange {
  readonly from: number;
  readonly to: number;
}

export type RangeResult = { ok: true; value: PortRange } | { ok: false; reason: string };

/** "20000-20999" (inclusive). */
export function parsePortRange(text: string): RangeResult {
  const m = /^([0-9]{1,5})-([0-9]{1,5})$/.exec(text.trim());
  if (!m) return { ok: false, reason: `${JSON.stringify(text)} is not a range like "20000-20999"` };
  const from = Number(m[1]);
  const to = Number(m[2]);
  for (const p of [from, to]) if (p < 1 || p > 65535) return { ok: false, reason: `${JSON.stringify(text)}: port ${p} is outside 1..65535` };
  if (from > to) return { ok: false, reason: `${JSON.stringify(text)}: starts above its end` };
  return { ok: true, value: { from, to } };
}

/** One listener's port and how to name its owner in a message. */
export interface PortClaim {
  readonly port: number;
  readonly path: readonly PathSegment[];
  /** e.g. "the control port (control.listen)" or "the data_port of grays[0]" */
  readonly owner: string;
}

/**
 * Reports every claim whose port an earlier claim already holds. Order matters: the first claim
 * keeps the port and the later ones are named in the message, which reads in file order.
 */
export function checkPortClashes(claims: readonly PortClaim[], issues: IssueList): void {
  const holder = new Map<number, PortClaim>();
  for (const claim of claims) {
    const first = holder.get(claim.port);
    if (first === undefined) holder.set(claim.port, claim);
    else issues.addAlways(claim.path, `${claim.port} is already ${first.owner}`, ErrorCodes.CONFIG_CONFLICT);
  }
}

/** The lowest `count` ports of the range that are not in `used`; PORTS_EXHAUSTED when too few. */
export function allocatePorts(range: PortRange, used: ReadonlySet<number>, count: number): number[] {
  const out: number[] = [];
  for (let p = range.from; p <= range.to && out.length < count; p++) if (!used.has(p)) out.push(p);
  if (out.length < count) {
    const free = out.length;
    throw new RelayError(
      ErrorCodes.PORTS_EXHAUSTED,
      `ports.range ${range.from}-${range.to}: ${free === 0 ? 'no free port' : `only ${free} free port`} left, ${count} needed; widen the range or delete grays`,
      { details: { from: range.from, to: range.to, needed: count, free } },
    );
  }
  return out;
}
