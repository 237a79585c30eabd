// A strict parser of the Prometheus text exposition format 0.0.4, written here (not in src/) so
// the renderers are judged by an independent reading of the format.

export interface Sample {
  /** The sample's own name: the family's, or with _bucket, _sum, _count for a histogram. */
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface Family {
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * A strict parser: each family is HELP then TYPE then its samples, contiguous, declared once;
 * no blank lines, no comments of other kinds, the text ends with a newline, label values use only
 * the three escapes, no duplicate series, values are numbers. Throws on anything else.
 */
export function parsePrometheusText(text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('must end with a newline');
  const lines = text.slice(0, -1).split('\n');
  const families = new Map<string, Family>();
  let current: string | null = null;
  let lastHelp: string | null = null;
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${JSON.stringify(line)}`;
    if (line === '') throw new Error(`${where}: blank line`);
    if (line.startsWith('# HELP ')) {
      const rest = line.slice(7);
      const sp = rest.indexOf(' ');
      const name = sp === -1 ? rest : rest.slice(0, sp);
      if (!NAME.test(name)) throw new Error(`${where}: bad name`);
      if (families.has(name)) throw new Error(`${where}: family declared twice`);
      const help = sp === -1 ? '' : unescapeHelp(rest.slice(sp + 1), where);
      families.set(name, { type: '', help, samples: [] });
      lastHelp = name;
      current = null;
      return;
    }
    if (line.startsWith('# TYPE ')) {
      const m = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      if (!m) throw new Error(`${where}: bad TYPE`);
      const name = m[1]!;
      if (name !== lastHelp) throw new Error(`${where}: TYPE must follow HELP of the same family`);
      families.get(name)!.type = m[2]!;
      current = name;
      lastHelp = null;
      return;
    }
    if (line.startsWith('#')) throw new Error(`${where}: unexpected comment`);
    const { name, labels, value } = parseSample(line, where);
    const fam = current === null ? undefined : families.get(current);
    const suffix = fam?.type === 'histogram' && name.startsWith(`${current}_`) ? name.slice(current!.length) : '';
    if (!fam || (name !== current && !['_bucket', '_sum', '_count'].includes(suffix))) throw new Error(`${where}: sample outside its family block (current ${current})`);
    if (fam.type === 'histogram' && suffix === '') throw new Error(`${where}: a histogram's samples are _bucket, _sum and _count`);
    if (suffix === '_bucket' && !('le' in labels)) throw new Error(`${where}: bucket without le`);
    const key = JSON.stringify([name, ...Object.entries(labels).sort()]);
    if (fam.samples.some((s) => JSON.stringify([s.name, ...Object.entries(s.labels).sort()]) === key)) throw new Error(`${where}: duplicate series`);
    fam.samples.push({ name, labels, value });
  });
  for (const [name, fam] of families) {
    if (fam.type === '') throw new Error(`${name}: HELP without TYPE`);
    if (fam.type === 'counter' && !name.endsWith('_total')) throw new Error(`${name}: counter without _total`);
    if (fam.type !== 'counter' && name.endsWith('_total')) throw new Error(`${name}: _total on a ${fam.type}`);
    if (fam.type === 'histogram') checkBuckets(name, fam);
  }
  return families;
}

function unescapeHelp(s: string, where: string): string {
  return s.replace(/\\(.?)/g, (_, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    throw new Error(`${where}: bad escape in HELP`);
  });
}

function parseSample(line: string, where: string): { name: string; labels: Record<string, string>; value: number } {
  let i = 0;
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
  if (!nameMatch) throw new Error(`${where}: bad metric name`);
  const name = nameMatch[0];
  i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    while (line[i] !== '}') {
      const lm = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
      if (!lm || !LABEL.test(lm[0])) throw new Error(`${where}: bad label name at ${i}`);
      const lname = lm[0];
      i += lname.length;
      if (line[i] !== '=' || line[i + 1] !== '"') throw new Error(`${where}: expected =" at ${i}`);
      i += 2;
      let value = '';
      for (;;) {
        const ch = line[i];
        if (ch === undefined) throw new Error(`${where}: unterminated label value`);
        if (ch === '"') break;
        if (ch === '\\') {
          const e = line[i + 1];
          if (e === '\\') value += '\\';
          else if (e === '"') value += '"';
          else if (e === 'n') value += '\n';
          else throw new Error(`${where}: bad escape \\${e}`);
          i += 2;
          continue;
        }
        value += ch;
        i++;
      }
      i++; // closing quote
      if (lname in labels) throw new Error(`${where}: label ${lname} twice`);
      labels[lname] = value;
      if (line[i] === ',') i++;
      else if (line[i] !== '}') throw new Error(`${where}: expected , or } at ${i}`);
    }
    i++;
  }
  if (line[i] !== ' ') throw new Error(`${where}: expected one space before the value`);
  const rest = line.slice(i + 1);
  if (!/^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)$/.test(rest)) throw new Error(`${where}: bad value ${rest}`);
  const value = rest === '+Inf' ? Infinity : rest === '-Inf' ? -Infinity : Number(rest);
  return { name, labels, value };
}

/** Buckets cumulative and ending in +Inf equal to _count, per label set. */
function checkBuckets(name: string, fam: Family): void {
  const series = new Map<string, Sample[]>();
  for (const s of fam.samples.filter((x) => x.name === `${name}_bucket`)) {
    const { le: _le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    series.set(key, [...(series.get(key) ?? []), s]);
  }
  for (const [key, buckets] of series) {
    for (let i = 1; i < buckets.length; i++) if (buckets[i]!.value < buckets[i - 1]!.value) throw new Error(`${name}${key}: buckets not cumulative`);
    const last = buckets[buckets.length - 1]!;
    if (last.labels.le !== '+Inf') throw new Error(`${name}${key}: last bucket is not +Inf`);
    const count = fam.samples.find((x) => x.name === `${name}_count` && JSON.stringify(Object.entries(x.labels).sort()) === key);
    if (count?.value !== last.value) throw new Error(`${name}${key}: +Inf bucket differs from _count`);
  }
}

/** The value of the sample with exactly this name and these labels. */
export function sampleValue(fams: Map<string, Family>, name: string, labels: Record<string, string> = {}, sample = name): number | undefined {
  const fam = fams.get(name);
  if (!fam) throw new Error(`no family ${name}`);
  const want = JSON.stringify(Object.entries(labels).sort());
  return fam.samples.find((s) => s.name === sample && JSON.stringify(Object.entries(s.labels).sort()) === want)?.value;
}
