// What both data planes promise about a joined pair of sockets (client and data connection on
// the white; data connection and local service on the gray).

export interface PairResult {
  /** Bytes read from `a` (and so written towards `b`), including what was read before joining. */
  readonly bytesFromA: number;
  readonly bytesFromB: number;
  /** The first error that ended the pair, if any; an orderly close or destroy() gives null. */
  readonly error: Error | null;
}

/** Bytes written before any forwarded byte: a start header, a PROXY protocol header. */
export interface Heads {
  readonly toA?: Buffer;
  readonly toB?: Buffer;
}

export type DataPlaneName = 'splice' | 'js';

export interface JoinedPair {
  readonly plane: DataPlaneName;
  /** Live counts, for statistics while the pair is open; the final ones come with PairResult. */
  bytesFromA(): number;
  bytesFromB(): number;
  /** End the pair now; onClosed still runs once. */
  destroy(): void;
}

export type OnPairClosed = (result: PairResult) => void;
