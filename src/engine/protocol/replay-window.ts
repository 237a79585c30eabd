// Anti-replay and credit window for data-connection counters (one per session).
//
// The white grants credits cumulatively (GRANT up_to = N lets the gray use counters 1..N); each
// counter may open one data connection, once. Connections arrive out of order (parallel dials), so
// "greater than the last one" is not enough. Memory is kept bounded: everything at or below `floor`
// is known used, and only counters above it are remembered individually. Since every remembered
// counter is in floor+1..granted, the set never exceeds granted - floor, which the white bounds by
// limiting credits in flight.

import { ErrorCodes, RelayError } from '../../errors.js';

export type CounterVerdict = 'ok' | 'replay' | 'no-credit';

export class CounterWindow {
  #granted = 0;
  #used = 0;
  /** Every counter in 1..floor has been accepted. */
  #floor = 0;
  /** Accepted counters above the floor (never contains floor + 1, which would be folded in). */
  readonly #seen = new Set<number>();

  /** Highest counter the gray may use. */
  get granted(): number {
    return this.#granted;
  }

  /** Number of counters accepted so far. */
  get used(): number {
    return this.#used;
  }

  /** Highest counter below which (inclusive) every counter is used. For tests and diagnostics. */
  get floor(): number {
    return this.#floor;
  }

  /** Counters remembered individually; bounded by granted - floor. For tests and diagnostics. */
  get trackedCount(): number {
    return this.#seen.size;
  }

  /** Raises the credit to `upTo`. Lower values are ignored: credit handed out cannot be taken back
   *  (the gray may already be dialing with it), and GRANT is cumulative so a stale one is harmless. */
  grant(upTo: number): void {
    if (!Number.isSafeInteger(upTo) || upTo < 0) {
      throw new RelayError(ErrorCodes.INTERNAL, `grant ${upTo} is not an integer in 0..${Number.MAX_SAFE_INTEGER}`);
    }
    if (upTo > this.#granted) this.#granted = upTo;
  }

  accept(counter: number): CounterVerdict {
    if (!Number.isSafeInteger(counter) || counter < 1) {
      // parsePreamble never produces these; treat a bad value as an internal bug, not a verdict.
      throw new RelayError(ErrorCodes.INTERNAL, `counter ${counter} is not an integer in 1..${Number.MAX_SAFE_INTEGER}`);
    }
    if (counter <= this.#floor) return 'replay';
    if (counter > this.#granted) return 'no-credit';
    if (this.#seen.has(counter)) return 'replay';
    this.#used += 1;
    if (counter === this.#floor + 1) {
      // Extend the floor over this counter and any run of already-seen ones above it.
      let floor = counter;
      while (this.#seen.delete(floor + 1)) floor += 1;
      this.#floor = floor;
    } else {
      this.#seen.add(counter);
    }
    return 'ok';
  }
}
