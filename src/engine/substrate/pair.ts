// What both data planes promise about a pair: two connections whose bytes move both ways until
// both have ended (client and data connection on the white; data connection and service on the
// gray).

export interface PairEnd {
  /** Bytes read from side a (and so written towards b), including what was read before the join. */
  readonly bytesFromA: number;
  readonly bytesFromB: number;
  /** The first error that ended the pair, if any; an orderly end or destroy() gives null. */
  readonly error: Error | null;
}

/** Bytes written before any forwarded byte: a start header, a PROXY protocol header. */
export interface Heads {
  readonly toA?: Buffer;
  readonly toB?: Buffer;
}

export type DataPlaneName = 'splice' | 'js';

export interface Pair {
  readonly plane: DataPlaneName;
  /** Live counts, for statistics while the pair is open; the final ones come with PairEnd. */
  bytesFromA(): number;
  bytesFromB(): number;
  /** End the pair now; its end is still reported, once. */
  destroy(): void;
}

export type OnPairEnd = (end: PairEnd) => void;
