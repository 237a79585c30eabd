// A hand-written SVG bar chart of the ratios (no charting dependency): one horizontal bar group
// per metric, a line at 1.0, and the target marked where relay has one.
import { CHECKS, opSymbol, passes } from './plan.js';
import { BUSY_MACHINE_SHARE, type Summary, type TargetStatus, type WrkStatus } from './report.js';
import type { TargetName } from './targets.js';

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

interface Series {
  name: string;
  color: string;
  get: (m: Summary['metrics'][number]) => number | null;
}

export function renderSvg(summary: Summary, status: Record<TargetName, TargetStatus>, wrk: WrkStatus, title: string): string {
  const W = 900;
  const labelW = 250;
  const plotW = W - labelW - 90;
  const barH = 11;
  const rowGap = 8;
  const panels: { heading: string; series: Series[]; showTargets: boolean; note?: string }[] = [];

  const relayOk = status.relay.available;
  const hapOk = status.haproxy.available;
  if (relayOk && hapOk) {
    panels.push({
      heading: 'relay ÷ haproxy chain (target: black tick; green bar = met, red = missed; latency rows: lower is better)',
      series: [{ name: 'relay/haproxy', color: '#3366cc', get: (m) => m.ratios.relayVsHaproxy }],
      showTargets: true,
    });
  } else {
    const why = !relayOk ? `relay unavailable: ${(status.relay as { reason: string }).reason}` : `haproxy unavailable: ${(status.haproxy as { reason: string }).reason}`;
    panels.push({ heading: 'relay ÷ haproxy chain', series: [], showTargets: false, note: why });
  }
  const directSeries: Series[] = [];
  if (hapOk) directSeries.push({ name: 'haproxy/direct', color: '#dc7633', get: (m) => m.ratios.haproxyVsDirect });
  if (relayOk) directSeries.push({ name: 'relay/direct', color: '#3366cc', get: (m) => m.ratios.relayVsDirect });
  panels.push({
    heading: 'each chain ÷ direct to the service (latency rows: lower is better)',
    series: directSeries,
    showTargets: false,
    ...(directSeries.length === 0 ? { note: 'no chain available' } : {}),
  });

  // One scale for the whole chart, so bars in the two panels compare.
  let maxV = 1.5;
  for (const p of panels) for (const s of p.series) for (const m of summary.metrics) maxV = Math.max(maxV, s.get(m) ?? 0);
  maxV = Math.min(Math.ceil(maxV * 2) / 2, 4);
  const x = (v: number): number => labelW + (Math.min(v, maxV) / maxV) * plotW;

  const parts: string[] = [];
  let y = 30;
  parts.push(`<text x="${W / 2}" y="${y}" text-anchor="middle" font-size="16" font-weight="bold">${esc(title)}</text>`);
  y += 20;
  for (const p of panels) {
    y += 16;
    parts.push(`<text x="10" y="${y}" font-size="13" font-weight="bold">${esc(p.heading)}</text>`);
    y += 10;
    if (p.note) {
      y += 18;
      parts.push(`<text x="${labelW}" y="${y}" font-size="12" fill="#a00">${esc(p.note)}</text>`);
      y += 10;
      continue;
    }
    // Legend.
    let lx = labelW;
    y += 14;
    for (const s of p.series) {
      parts.push(`<rect x="${lx}" y="${y - 9}" width="10" height="10" fill="${s.color}"/>`);
      parts.push(`<text x="${lx + 14}" y="${y}" font-size="11">${esc(s.name)}</text>`);
      lx += 130;
    }
    y += 8;
    const top = y;
    for (const m of summary.metrics) {
      const groupH = p.series.length * barH + rowGap;
      const cy = y + (p.series.length * barH) / 2 + 4;
      parts.push(`<text x="${labelW - 8}" y="${cy}" font-size="11" text-anchor="end">${esc(m.label)}</text>`);
      p.series.forEach((s, i) => {
        const v = s.get(m);
        const by = y + i * barH;
        if (v === null || !Number.isFinite(v)) {
          parts.push(`<text x="${labelW + 4}" y="${by + barH - 2}" font-size="10" fill="#888">n/a</text>`);
          return;
        }
        // Against a target, the bar says pass (green) or miss (red) at a glance.
        const c = p.showTargets ? CHECKS.find((d) => d.metric === m.id) : undefined;
        const fill = c ? (passes(c.op, v, c.value) ? '#2e8b57' : '#c0392b') : s.color;
        parts.push(`<rect x="${labelW}" y="${by}" width="${(x(v) - labelW).toFixed(1)}" height="${barH - 2}" fill="${fill}"/>`);
        parts.push(`<text x="${(x(v) + 4).toFixed(1)}" y="${by + barH - 2}" font-size="10">${v.toFixed(2)}${v > maxV ? ' ▸' : ''}</text>`);
      });
      if (p.showTargets) {
        const c = CHECKS.find((d) => d.metric === m.id);
        if (c) {
          const tx = x(c.value).toFixed(1);
          parts.push(`<line x1="${tx}" x2="${tx}" y1="${y - 2}" y2="${y + p.series.length * barH}" stroke="#000" stroke-width="2"/>`);
          parts.push(`<text x="${W - 10}" y="${cy}" font-size="10" text-anchor="end" fill="#c00">${esc(`${opSymbol(c.op)} ${c.value}`)}</text>`);
        }
      }
      y += groupH;
    }
    // The 1.0 line and the axis ticks.
    parts.push(`<line x1="${x(1)}" x2="${x(1)}" y1="${top - 4}" y2="${y}" stroke="#333" stroke-dasharray="4 3"/>`);
    for (let t = 0; t <= maxV + 1e-9; t += 0.5) {
      parts.push(`<text x="${x(t).toFixed(1)}" y="${y + 12}" font-size="9" text-anchor="middle" fill="#555">${t.toFixed(1)}</text>`);
    }
    y += 20;
  }
  const rss = summary.checks.find((c) => c.id === 'white_rss_kept');
  if (rss) {
    y += 16;
    const txt =
      rss.measured === null
        ? `white peak RSS under kept-conn load: not measured (${rss.note})`
        : `white peak RSS under kept-conn load: ${rss.measured.toFixed(1)} MiB (target < ${rss.value}) ${rss.pass ? '✓' : '✗'}`;
    parts.push(`<text x="10" y="${y}" font-size="12">${esc(txt)}</text>`);
  }
  const a = summary.authorizeCost;
  {
    y += 16;
    const txt =
      a.unavailable !== null
        ? `${a.label}: not measured (${a.unavailable})`
        : `${a.label}: rate ×${a.connPerSec.ratio?.toFixed(2) ?? '?'}, TTFB p50 ${a.ttfbP50Ms.addedMs === null ? '?' : `${a.ttfbP50Ms.addedMs >= 0 ? '+' : '−'}${Math.abs(a.ttfbP50Ms.addedMs).toFixed(3)}`} ms, white+gray CPU ${a.relayCpuUsPerConn.addedUs === null ? '?' : `${a.relayCpuUsPerConn.addedUs >= 0 ? '+' : '−'}${Math.abs(a.relayCpuUsPerConn.addedUs).toFixed(1)}`} µs per connection`;
    parts.push(`<text x="10" y="${y}" font-size="12">${esc(txt)}</text>`);
  }
  const wrkMissing = wrk.available
    ? Object.entries(wrk.targets).flatMap(([t, s]) => (s && !s.available ? [`${t}: ${s.reason}`] : []))
    : [wrk.reason];
  if (wrkMissing.length > 0) {
    y += 16;
    parts.push(`<text x="10" y="${y}" font-size="12" fill="#a00">${esc(`wrk→nginx workload unavailable: ${wrkMissing.join('; ')}`.slice(0, 160))}</text>`);
  }
  const f = summary.foreignCpuShare;
  if (f) {
    y += 16;
    const busy = f.median > BUSY_MACHINE_SHARE;
    parts.push(
      `<text x="10" y="${y}" font-size="12"${busy ? ' fill="#c00"' : ''}>${esc(
        `other processes' CPU while measuring: median ${(f.median * 100).toFixed(0)}% of all cores (max ${(f.max * 100).toFixed(0)}%)${busy ? ': busy machine, figures unreliable' : ''}`,
      )}</text>`,
    );
  }
  y += 20;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
${parts.join('\n')}
</svg>
`;
}
