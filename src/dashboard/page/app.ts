// The dashboard page. Loads the state once with fetch, then follows the white's event stream
// (EventSource) from that position: the server sends at most one message a second, whole rows
// of what changed. Every text goes in with textContent: gray ids and error texts come from the
// network and are never markup.
import type { Delta, EventRow, FullState, GrayRow, Totals, TrafficSample } from '../wire.js';

type SortKey = 'id' | 'status' | 'since' | 'publicPort' | 'dataPort' | 'pool' | 'clients' | 'bytesIn' | 'bytesOut' | 'traffic';

interface RowView {
  row: GrayRow;
  series: number[];
  readonly tr: HTMLTableRowElement;
  readonly cells: {
    readonly status: HTMLElement;
    readonly remote: HTMLElement;
    readonly since: HTMLElement;
    readonly publicPort: HTMLElement;
    readonly dataPort: HTMLElement;
    readonly pool: HTMLElement;
    readonly clients: HTMLElement;
    readonly bytesIn: HTMLElement;
    readonly bytesOut: HTMLElement;
  };
  readonly spark: SVGPolylineElement;
}

const SVG = 'http://www.w3.org/2000/svg';
const SPARK_W = 120;
const SPARK_H = 22;

const views = new Map<string, RowView>();
let events: EventRow[] = [];
let points = 60;
let lastK = 0;
/** The white's clock minus ours, so "since" does not depend on this machine's clock. */
let skew = 0;
let position: string | null = null;
let sortKey: SortKey = 'status';
let sortDir = 1;
let filterWords: string[] = [];
let order: string[] = [];
let firstRender = true;
let version = '';
let startedAt = 0;

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const tbody = (): HTMLTableSectionElement => document.querySelector('#grays tbody') as HTMLTableSectionElement;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

// Made once: toLocaleString() builds a formatter on every call, too slow for 1,000 rows.
const timeOfDay = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });
const dateAndTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

function clock(at: number): string {
  const sameDay = new Date().toDateString() === new Date(at).toDateString();
  return sameDay ? timeOfDay.format(at) : dateAndTime.format(at);
}

function serverNow(): number {
  return Date.now() + skew;
}

function newView(row: GrayRow): RowView {
  const tr = el('tr');
  tr.dataset.id = row.id;
  const id = el('td', 'id', row.id);
  const remote = el('span', 'remote');
  id.append(' ', remote);
  const status = el('span', 'badge');
  const statusCell = el('td');
  statusCell.append(status);
  const since = el('td', 'since');
  const cells = {
    status,
    remote,
    since,
    publicPort: el('td', 'num'),
    dataPort: el('td', 'num'),
    pool: el('td', 'num'),
    clients: el('td', 'num'),
    bytesIn: el('td', 'num bytes-in'),
    bytesOut: el('td', 'num bytes-out'),
  };
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', `0 0 ${SPARK_W} ${SPARK_H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const spark = document.createElementNS(SVG, 'polyline');
  svg.append(spark);
  const sparkCell = el('td');
  sparkCell.append(svg);
  tr.append(id, statusCell, since, cells.publicPort, cells.dataPort, cells.pool, cells.clients, cells.bytesIn, cells.bytesOut, sparkCell);
  const view: RowView = { row, series: new Array<number>(points).fill(0), tr, cells, spark };
  fill(view, row, true);
  return view;
}

function fill(view: RowView, row: GrayRow, fresh: boolean): void {
  const old = view.row;
  view.row = row;
  const { tr, cells } = view;
  if (fresh || old.online !== row.online) {
    tr.className = row.online ? 'online' : 'offline';
    cells.status.textContent = row.online ? 'online' : 'offline';
    // When the page saw the change, for whoever measures how fast it shows.
    tr.dataset.changedAt = String(Date.now());
  }
  cells.remote.textContent = row.remote ?? '';
  cells.status.title = row.lastError ?? '';
  if (fresh || old.since !== row.since) cells.since.title = `since ${dateAndTime.format(row.since)}`;
  cells.since.textContent = formatAge(serverNow() - row.since);
  cells.publicPort.textContent = String(row.publicPort);
  cells.dataPort.textContent = String(row.dataPort);
  cells.pool.textContent = `${row.poolIdle} / ${row.poolTarget}`;
  cells.clients.textContent = row.pendingClients > 0 ? `${row.activeClients} (+${row.pendingClients} waiting)` : String(row.activeClients);
  cells.clients.title = `${row.clientsTotal} clients since the white started`;
  cells.bytesIn.textContent = formatBytes(row.bytesIn);
  cells.bytesIn.title = `${row.bytesIn} bytes`;
  cells.bytesOut.textContent = formatBytes(row.bytesOut);
  cells.bytesOut.title = `${row.bytesOut} bytes`;
}

function drawSpark(view: RowView): void {
  const s = view.series;
  const max = Math.max(1, ...s);
  const step = s.length > 1 ? SPARK_W / (s.length - 1) : SPARK_W;
  const pts = s.map((v, i) => `${(i * step).toFixed(1)},${(SPARK_H - 1 - (v / max) * (SPARK_H - 2)).toFixed(1)}`);
  view.spark.setAttribute('points', pts.join(' '));
  view.spark.parentElement!.setAttribute('aria-label', `${formatBytes(s.reduce((a, b) => a + b, 0))} in the last samples`);
}

function sortValue(v: RowView): number | string {
  const r = v.row;
  switch (sortKey) {
    case 'id':
      return r.id;
    case 'status':
      return r.online ? 1 : 0;
    case 'since':
      return r.since;
    case 'publicPort':
      return r.publicPort;
    case 'dataPort':
      return r.dataPort;
    case 'pool':
      return r.poolIdle;
    case 'clients':
      return r.activeClients;
    case 'bytesIn':
      return r.bytesIn;
    case 'bytesOut':
      return r.bytesOut;
    case 'traffic':
      return v.series.reduce((a, b) => a + b, 0);
  }
}

const collator = new Intl.Collator(undefined, { numeric: true });

function compare(a: RowView, b: RowView): number {
  const x = sortValue(a);
  const y = sortValue(b);
  const c = typeof x === 'string' ? collator.compare(x, y as string) : x - (y as number);
  // Ties by id, always ascending, so the order is stable between updates.
  return c !== 0 ? c * sortDir : collator.compare(a.row.id, b.row.id);
}

function matches(row: GrayRow): boolean {
  if (filterWords.length === 0) return true;
  const hay = `${row.id} ${row.online ? 'online' : 'offline'} ${row.publicPort} ${row.dataPort} ${row.remote ?? ''}`.toLowerCase();
  return filterWords.every((w) => hay.includes(w));
}

/** Puts rows in order (moving nodes only when the order changed) and applies the filter. */
function layout(resort = true): void {
  if (resort) {
    const sorted = [...views.values()].sort(compare);
    const ids = sorted.map((v) => v.row.id);
    if (ids.length !== order.length || ids.some((id, i) => id !== order[i])) {
      const frag = document.createDocumentFragment();
      for (const v of sorted) frag.append(v.tr);
      tbody().append(frag);
      order = ids;
    }
  }
  let shown = 0;
  for (const v of views.values()) {
    const visible = matches(v.row);
    if (v.tr.hidden === visible) v.tr.hidden = !visible;
    if (visible) shown++;
  }
  const grays = `${views.size} ${views.size === 1 ? 'gray' : 'grays'}`;
  $('shown').textContent = filterWords.length === 0 ? grays : `${shown} of ${grays} shown`;
  $('empty').hidden = views.size > 0;
  for (const th of document.querySelectorAll<HTMLElement>('th[data-sort]')) {
    if (th.dataset.sort === sortKey) th.setAttribute('aria-sort', sortDir > 0 ? 'ascending' : 'descending');
    else th.removeAttribute('aria-sort');
  }
}

function showTotals(t: Totals): void {
  $('t-online').textContent = `${t.online} / ${t.grays}`;
  const offline = t.grays - t.online;
  $('t-offline').textContent = String(offline);
  $('t-offline').parentElement!.classList.toggle('some', offline > 0);
  $('t-clients').textContent = String(t.activeClients);
  $('t-pool').textContent = `${t.poolIdle} / ${t.poolTarget}`;
  $('t-in').textContent = formatBytes(t.bytesIn);
  $('t-in').title = `${t.bytesIn} bytes`;
  $('t-out').textContent = formatBytes(t.bytesOut);
  $('t-out').title = `${t.bytesOut} bytes`;
  $('t-auth').textContent = String(t.authFailures);
  $('t-reloads').textContent = `${t.reloadsOk} / ${t.reloadsRejected}`;
  document.title = `relay: ${t.online}/${t.grays} online`;
}

function showEvents(): void {
  const list = $('events');
  const frag = document.createDocumentFragment();
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i]!;
    const li = el('li', e.kind.replace('.', '-'));
    const time = el('time', undefined, clock(e.at));
    time.dateTime = new Date(e.at).toISOString();
    li.append(time, el('span', 'kind', e.kind), el('span', 'gray', e.grayId ?? ''), el('span', 'text', e.text));
    frag.append(li);
  }
  list.replaceChildren(frag);
}

function addEvents(more: readonly EventRow[]): void {
  const last = events.length > 0 ? events[events.length - 1]!.n : 0;
  const fresh = more.filter((e) => e.n > last);
  if (fresh.length === 0) return;
  events = events.concat(fresh).slice(-100);
  showEvents();
}

function addSamples(samples: readonly TrafficSample[]): void {
  const touched = new Set<RowView>();
  for (const s of samples) {
    if (s.k <= lastK) continue;
    // Samples the page missed (the stream was away) count as nothing moved.
    const steps = Math.min(points, s.k - lastK);
    for (const v of views.values()) {
      const value = s.values[v.row.id] ?? 0;
      // A quiet gray's flat line stays as it is: no work for most rows of a big white.
      if (value === 0 && v.series.every((n) => n === 0)) continue;
      for (let i = 1; i < steps; i++) v.series.push(0);
      v.series.push(value);
      v.series.splice(0, v.series.length - points);
      touched.add(v);
    }
    lastK = s.k;
  }
  for (const v of touched) drawSpark(v);
}

function showVersion(): void {
  $('version').textContent = `white ${version}, up ${formatAge(serverNow() - startedAt)}`;
}

function applyFull(s: FullState): void {
  position = `${s.epoch}.${s.seq}`;
  skew = s.now - Date.now();
  points = s.traffic.points;
  lastK = s.traffic.lastK;
  version = s.version;
  startedAt = s.startedAt;
  showVersion();
  $('traffic-head').textContent = `traffic (${Math.round((s.traffic.points * s.traffic.intervalMs) / 60000)} min)`;
  views.clear();
  tbody().replaceChildren();
  order = [];
  for (const row of s.grays) {
    const v = newView(row);
    const series = s.traffic.series[row.id];
    if (series) v.series = [...series];
    drawSpark(v);
    views.set(row.id, v);
  }
  events = [...s.events];
  showEvents();
  showTotals(s.totals);
  layout();
  if (firstRender) {
    firstRender = false;
    performance.mark('relay-first-render');
    document.body.dataset.rendered = String(s.grays.length);
  }
}

function applyDelta(d: Delta): void {
  skew = d.now - Date.now();
  if (d.ids) {
    const keep = new Set(d.ids);
    for (const [id, v] of views) {
      if (!keep.has(id)) {
        v.tr.remove();
        views.delete(id);
      }
    }
  }
  for (const row of d.grays) {
    const v = views.get(row.id);
    if (v) fill(v, row, false);
    else {
      const nv = newView(row);
      drawSpark(nv);
      views.set(row.id, nv);
    }
  }
  addSamples(d.samples);
  addEvents(d.events);
  showTotals(d.totals);
  layout();
}

function setLink(kind: 'live' | 'lost' | 'connecting', text: string): void {
  const link = $('link');
  link.className = `link ${kind}`;
  link.textContent = text;
}

function follow(): void {
  const source = new EventSource(`api/events${position ? `?since=${encodeURIComponent(position)}` : ''}`);
  source.addEventListener('open', () => setLink('live', 'live'));
  source.addEventListener('error', () => setLink(source.readyState === EventSource.CLOSED ? 'lost' : 'connecting', source.readyState === EventSource.CLOSED ? 'white unreachable' : 'reconnecting…'));
  source.addEventListener('state', (e) => applyFull(JSON.parse((e as MessageEvent<string>).data) as FullState));
  source.addEventListener('delta', (e) => applyDelta(JSON.parse((e as MessageEvent<string>).data) as Delta));
}

function wireControls(): void {
  const filter = $<HTMLInputElement>('filter');
  filter.addEventListener('input', () => {
    filterWords = filter.value.toLowerCase().split(/\s+/).filter((w) => w !== '');
    layout(false);
  });
  for (const th of document.querySelectorAll<HTMLElement>('th[data-sort]')) {
    th.addEventListener('click', () => {
      const key = th.dataset.sort as SortKey;
      sortDir = key === sortKey ? -sortDir : 1;
      sortKey = key;
      layout();
    });
  }
  // Ages tick locally; nothing is fetched for them.
  setInterval(() => {
    const now = serverNow();
    showVersion();
    for (const v of views.values()) {
      if (v.tr.hidden) continue;
      const text = formatAge(now - v.row.since);
      if (v.cells.since.textContent !== text) v.cells.since.textContent = text;
    }
  }, 1000);
}

async function main(): Promise<void> {
  wireControls();
  try {
    const res = await fetch('api/state', { cache: 'no-store' });
    if (!res.ok) throw new Error(`${res.status}`);
    applyFull((await res.json()) as FullState);
  } catch {
    setLink('lost', 'white unreachable');
  }
  follow();
}

void main();
