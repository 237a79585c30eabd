// A Prometheus-style histogram with fixed bucket bounds: observe() is a short scan and two
// additions, cheap enough for the client path; metrics render the cumulative counts at scrape.

/** Bucket upper bounds in seconds, from 100 µs (paired at once) to 10 s (a slow hook, a long wait). */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class Histogram {
  /** counts[i]: observations in (bounds[i-1], bounds[i]]; the last slot is above every bound. */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[] = LATENCY_BUCKETS_SECONDS) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  /** In JSON (the admin API's state) only the totals; the buckets are for metrics. */
  toJSON(): { count: number; sum: number } {
    return { count: this.count, sum: this.sum };
  }

  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    this.counts[i]! += 1;
    this.sum += value;
    this.count += 1;
  }
}
