// Exponential backoff with full jitter, capped. Used by the gray to reconnect its control
// channel and to retry data-port dials. Jitter keeps many grays from reconnecting in lockstep
// after a white restart.

export class Backoff {
  private attempt = 0;

  constructor(
    private readonly baseMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** Delay before the next attempt: uniform in [base/2, min(max, base·2^n)]. */
  next(): number {
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    const floor = Math.min(ceiling, this.baseMs / 2);
    return Math.round(floor + (ceiling - floor) * this.random());
  }

  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
