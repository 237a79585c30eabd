// Port bookkeeping for the white config: every listener the white opens needs its own port, and
// relayctl add allocates new gray ports from a configured range without taking a used one.
import { readFile } from 'node:fs/promises';
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

/**
 * The lowest `count` ports of the range that are not in `used` and that `usable` accepts (relayctl
 * add asks whether the white's bind address can have the port now: a port held by another
 * program or an outgoing connection is skipped); PORTS_EXHAUSTED when too few.
 */
export async function allocatePorts(range: PortRange, used: ReadonlySet<number>, count: number, usable: (port: number) => Promise<boolean> = async () => true): Promise<number[]> {
  const out: number[] = [];
  let busy = 0;
  for (let p = range.from; p <= range.to && out.length < count; p++) {
    if (used.has(p)) continue;
    if (await usable(p)) out.push(p);
    else busy += 1;
  }
  if (out.length < count) {
    const free = out.length;
    const held = busy === 0 ? '' : ` (${busy} more ${busy === 1 ? 'is' : 'are'} held by other programs on this host)`;
    throw new RelayError(
      ErrorCodes.PORTS_EXHAUSTED,
      `ports.range ${range.from}-${range.to}: ${free === 0 ? 'no free port' : `only ${free} free port`} left${held}, ${count} needed; widen the range or delete grays`,
      { details: { from: range.from, to: range.to, needed: count, free, busy } },
    );
  }
  return out;
}

/** Where Linux says which local ports outgoing connections take. */
export const EPHEMERAL_RANGE_FILE = '/proc/sys/net/ipv4/ip_local_port_range';

/** The kernel's ephemeral port range, or null where it cannot be read (not Linux). */
export async function ephemeralPortRange(file = EPHEMERAL_RANGE_FILE): Promise<PortRange | null> {
  const text = await readFile(file, 'utf8').catch(() => null);
  const m = text === null ? null : /^\s*([0-9]+)\s+([0-9]+)\s*$/.exec(text);
  return m ? { from: Number(m[1]), to: Number(m[2]) } : null;
}

/**
 * A warning when ports.range overlaps the ephemeral range: any outgoing connection on the host
 * may hold one of those ports at the moment the white wants to listen on it. Null when they do
 * not overlap (or the ephemeral range is unknown).
 */
export function ephemeralOverlap(range: PortRange, ephemeral: PortRange | null): string | null {
  if (ephemeral === null || range.to < ephemeral.from || range.from > ephemeral.to) return null;
  return (
    `ports.range ${range.from}-${range.to} overlaps the kernel's ephemeral port range ${ephemeral.from}-${ephemeral.to} (${EPHEMERAL_RANGE_FILE}): ` +
    'an outgoing connection may hold one of these ports when the white needs it; choose a range outside it, or reserve it with sysctl net.ipv4.ip_local_reserved_ports'
  );
}
