// The Prometheus text exposition format 0.0.4: families of samples, escaped as the format says.
import type { Histogram } from '../engine/histogram.js';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

type Labels = Record<string, string>;
type MetricType = 'gauge' | 'counter' | 'histogram';

/** Escape a label value: backslash, double quote and line feed are the only specials. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escapes backslash and line feed (not quotes). */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Number.POSITIVE_INFINITY) return '+Inf';
  if (v === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(v);
}

export class Family {
  /** label set (rendered) → value. Identical label sets are summed: a duplicate series would make
   *  Prometheus reject the whole scrape (two hooks with the same URL, for instance). */
  private readonly samples = new Map<string, number>();

  constructor(
    readonly name: string,
    readonly type: MetricType,
    readonly help: string,
  ) {}

  add(value: number, labels: Labels = {}): this {
    const key = Object.entries(labels)
      .map(([k, v]) => `${k}="${escapeLabelValue(v)}"`)
      .join(',');
    this.samples.set(key, (this.samples.get(key) ?? 0) + value);
    return this;
  }

  /** A histogram's series for one label set: cumulative buckets, sum and count. */
  addHistogram(h: Histogram, labels: Labels = {}): this {
    let cumulative = 0;
    h.bounds.forEach((bound, i) => {
      cumulative += h.counts[i]!;
      this.sample('_bucket', cumulative, { ...labels, le: formatValue(bound) });
    });
    this.sample('_bucket', h.count, { ...labels, le: '+Inf' });
    this.sample('_sum', h.sum, labels);
    this.sample('_count', h.count, labels);
    return this;
  }

  private sample(suffix: string, value: number, labels: Labels): void {
    const key = Object.entries(labels)
      .map(([k, v]) => `${k}="${escapeLabelValue(v)}"`)
      .join(',');
    this.suffixed.push(`${this.name}${suffix}{${key}} ${formatValue(value)}`);
  }

  private readonly suffixed: string[] = [];

  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`);
    out.push(`# TYPE ${this.name} ${this.type}`);
    for (const [labels, value] of this.samples) {
      out.push(`${this.name}${labels ? `{${labels}}` : ''} ${formatValue(value)}`);
    }
    out.push(...this.suffixed);
  }
}

