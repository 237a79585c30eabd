// Joining two sockets into one full-duplex pair: the hot path. The splice plane is used when it
// is built and not turned off; the JS plane otherwise, and for any pair the splice plane cannot
// take. RELAY_DATA_PLANE=auto|splice|js chooses (auto by default); `splice` makes a missing
// native module an error at startup instead of a silent fallback.
import type { Socket } from 'node:net';
import { ErrorCodes, RelayError } from '../../errors.js';
import type { DataPlaneName, Heads, JoinedPair, OnPairClosed } from './joined-pair.js';
import { joinWithStreams } from './js-plane.js';
import { joinWithSplice, spliceAvailable, spliceUnavailableReason } from './splice-plane.js';

export type { JoinedPair, PairResult } from './joined-pair.js';

type Choice = 'auto' | DataPlaneName;

function choice(): Choice {
  const value = process.env.RELAY_DATA_PLANE ?? 'auto';
  if (value === 'auto' || value === 'splice' || value === 'js') return value;
  throw new RelayError(ErrorCodes.USAGE, `RELAY_DATA_PLANE=${value}: expected auto, splice or js`);
}

export interface DataPlaneStatus {
  readonly plane: DataPlaneName;
  /** Why the splice plane is not in use, when it is not. */
  readonly note: string | null;
}

let resolved: DataPlaneStatus | null = null;

/** Decides the plane once (the first call, at startup); throws when RELAY_DATA_PLANE asks for
 *  what cannot be had. */
export function resolveDataPlane(): DataPlaneStatus {
  resolved ??= decide();
  return resolved;
}

function decide(): DataPlaneStatus {
  const wanted = choice();
  if (wanted === 'js') return { plane: 'js', note: 'RELAY_DATA_PLANE=js' };
  if (spliceAvailable()) return { plane: 'splice', note: null };
  const why = spliceUnavailableReason() ?? 'unknown';
  if (wanted === 'splice') throw new RelayError(ErrorCodes.DATA_PLANE_UNAVAILABLE, `RELAY_DATA_PLANE=splice, but the native splice plane cannot start: ${why}`);
  return { plane: 'js', note: why };
}

export function joinSockets(a: Socket, b: Socket, heads: Heads, onClosed: OnPairClosed): JoinedPair {
  if (resolveDataPlane().plane === 'splice') {
    const pair = joinWithSplice(a, b, heads, onClosed);
    if (pair) return pair;
  }
  return joinWithStreams(a, b, heads, onClosed);
}

/** Socket options for every socket on the data path. */
export function tuneDataSocket(socket: Socket, keepAliveDelayMs: number): void {
  socket.setNoDelay(true);
  socket.setKeepAlive(true, keepAliveDelayMs);
}
