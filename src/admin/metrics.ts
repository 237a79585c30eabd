// Prometheus text exposition format 0.0.4, rendered from a WhiteSnapshot at scrape time. No client
// library: the metric set is small and fixed, and rendering from a snapshot keeps the data path
// free of metric objects (it only bumps plain counters, see engine/stats.ts).
import type { WhiteSnapshot } from '../engine/stats.js';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

type Labels = Record<string, string>;
type MetricType = 'gauge' | 'counter';

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

class Family {
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

  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`);
    out.push(`# TYPE ${this.name} ${this.type}`);
    for (const [labels, value] of this.samples) {
      out.push(`${this.name}${labels ? `{${labels}}` : ''} ${formatValue(value)}`);
    }
  }
}

export function renderMetrics(snapshot: WhiteSnapshot): string {
  const f = (name: string, type: MetricType, help: string): Family => new Family(name, type, help);
  const c = snapshot.counters;

  const startTime = f('relay_start_time_seconds', 'gauge', 'Start time of the white process, seconds since the Unix epoch.').add(snapshot.startedAt / 1000);
  const graysConnected = f('relay_grays_connected', 'gauge', 'Grays with an authenticated control session.').add(snapshot.grays.filter((g) => g.connected).length);
  const grayConnected = f('relay_gray_connected', 'gauge', '1 if the gray has an authenticated control session, else 0.');
  const poolIdle = f('relay_pool_idle', 'gauge', 'Verified idle data connections in the gray\'s pool.');
  const poolTarget = f('relay_pool_target', 'gauge', 'Idle pool size the gray is asked to keep.');
  const active = f('relay_clients_active', 'gauge', 'Client connections currently forwarded to the gray.');
  const pending = f('relay_clients_pending', 'gauge', 'Clients waiting for a pooled data connection.');
  const total = f('relay_clients_total', 'counter', 'Client connections accepted on the gray\'s public port.');
  const bytesFrom = f('relay_bytes_from_clients_total', 'counter', 'Bytes received from clients and forwarded to the gray.');
  const bytesTo = f('relay_bytes_to_clients_total', 'counter', 'Bytes received from the gray and sent to clients.');
  const portsBound = f('relay_gray_ports_bound', 'gauge', '1 if both of the gray\'s ports are listening, 0 while the white retries binding them.');
  const bindFailures = f('relay_gray_bind_failures_total', 'counter', 'Failed attempts to bind the gray\'s public_port and data_port.');
  const idleTimeouts = f('relay_client_idle_timeouts_total', 'counter', 'Client connections reset after idle_timeout_ms with no byte either way.');
  for (const g of snapshot.grays) {
    const l = { gray: g.id };
    portsBound.add(g.portsBound ? 1 : 0, l);
    bindFailures.add(g.bindFailures, l);
    grayConnected.add(g.connected ? 1 : 0, l);
    poolIdle.add(g.poolIdle, l);
    poolTarget.add(g.poolTarget, l);
    active.add(g.activeClients, l);
    pending.add(g.pendingClients, l);
    total.add(g.clientsTotal, l);
    bytesFrom.add(g.bytesFromClients, l);
    bytesTo.add(g.bytesToClients, l);
    idleTimeouts.add(g.idleTimeouts, l);
  }

  const dataRej = f('relay_data_rejections_total', 'counter', 'Data-port connections refused, by reason.');
  for (const [reason, n] of sortedEntries(c.dataRejections)) dataRej.add(n, { reason });
  const ctlRej = f('relay_control_rejections_total', 'counter', 'Control connections refused or closed before authentication, by reason.');
  for (const [reason, n] of sortedEntries(c.controlRejections)) ctlRej.add(n, { reason });
  const authFail = f('relay_auth_failures_total', 'counter', 'Failed gray authentications.').add(c.authFailures);
  const reloads = f('relay_reloads_total', 'counter', 'Configuration reloads, by result.')
    .add(c.reloads.ok, { result: 'ok' })
    .add(c.reloads.rejected, { result: 'rejected' });
  const notApplied = f('relay_config_not_applied', 'gauge', 'Settings or grays of the last applied reload that are not in force (need a restart, or ports not bound yet).').add(
    c.lastReload?.notApplied?.length ?? 0,
  );

  const hookDeliveries = f('relay_hook_deliveries_total', 'counter', 'Webhook events settled, by result (delivered, or failed after all attempts).');
  const hookQueue = f('relay_hook_queue', 'gauge', 'Webhook events accepted and not yet settled, including the one in flight.');
  const hookDropped = f('relay_hook_dropped_total', 'counter', 'Webhook events dropped because the queue was full or the hook was closed.');
  for (const h of snapshot.hooks) {
    hookDeliveries.add(h.delivered, { url: h.url, result: 'delivered' }).add(h.failed, { url: h.url, result: 'failed' });
    hookQueue.add(h.queued, { url: h.url });
    hookDropped.add(h.dropped, { url: h.url });
  }

  const out: string[] = [];
  for (const fam of [
    startTime,
    graysConnected,
    grayConnected,
    poolIdle,
    poolTarget,
    active,
    pending,
    total,
    bytesFrom,
    bytesTo,
    portsBound,
    bindFailures,
    idleTimeouts,
    dataRej,
    ctlRej,
    authFail,
    reloads,
    notApplied,
    hookDeliveries,
    hookQueue,
    hookDropped,
  ]) {
    fam.render(out);
  }
  return `${out.join('\n')}\n`;
}

/** Stable output order, so two scrapes diff cleanly. */
function sortedEntries(rec: Record<string, number>): Array<[string, number]> {
  return Object.entries(rec).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
