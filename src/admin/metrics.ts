// The white's metrics, rendered from a WhiteSnapshot at scrape time. No client library: the
// metric set is small and fixed, and rendering from a snapshot keeps the data path free of metric
// objects (it only bumps plain counters and histogram slots, see engine/stats.ts). Every series is
// listed in docs/metrics.md.
import type { WhiteSnapshot } from '../engine/stats.js';
import type { DataPlaneName } from '../engine/substrate/pair.js';
import { hookDurations } from '../hooks/transport.js';
import { Family } from './metrics-format.js';
import { processFamilies } from './process-metrics.js';

export { escapeLabelValue, METRICS_CONTENT_TYPE } from './metrics-format.js';

export function renderMetrics(snapshot: WhiteSnapshot, dataPlane: DataPlaneName | undefined): string {
  const c = snapshot.counters;

  const graysConnected = new Family('relay_grays_connected', 'gauge', 'Grays with an authenticated control session.').add(snapshot.grays.filter((g) => g.connected).length);
  const grayConnected = new Family('relay_gray_connected', 'gauge', '1 if the gray has an authenticated control session, else 0.');
  const poolIdle = new Family('relay_pool_idle_connections', 'gauge', "Verified idle data connections in the gray's pool.");
  const poolTarget = new Family('relay_pool_target_connections', 'gauge', 'Idle pool size the gray is asked to keep (0 while it is offline).');
  const active = new Family('relay_clients_active', 'gauge', 'Client connections currently forwarded to the gray.');
  const pending = new Family('relay_clients_pending', 'gauge', 'Clients waiting for a pooled data connection.');
  const total = new Family('relay_clients_total', 'counter', 'Clients paired with a data connection of the gray.');
  const refused = new Family('relay_client_refusals_total', 'counter', "Clients on the gray's public port closed before pairing, by reason (gray offline, limits, wait timeout, hook denial).");
  const received = new Family('relay_client_received_bytes_total', 'counter', 'Bytes received from clients and forwarded to the gray (closed connections, plus live ones at scrape time).');
  const sent = new Family('relay_client_sent_bytes_total', 'counter', 'Bytes received from the gray and sent to clients (closed connections, plus live ones at scrape time).');
  const wait = new Family('relay_client_wait_seconds', 'histogram', 'Time an admitted client waited for a pooled data connection, seconds (0 when one was idle).');
  const idleTimeouts = new Family('relay_client_idle_timeouts_total', 'counter', 'Client connections reset after idle_timeout_ms with no byte either way.');
  const reused = new Family('relay_data_connections_reused_total', 'counter', "Data connections taken back into the gray's pool after a client, for the next one (when white and gray both run the engine).");
  const portsBound = new Family('relay_gray_ports_bound', 'gauge', "1 if both of the gray's ports are listening, 0 while the white retries binding them.");
  const bindFailures = new Family('relay_gray_bind_failures_total', 'counter', "Failed attempts to bind the gray's public_port and data_port.");
  const serviceActive = new Family('relay_service_clients_active', 'gauge', 'Client connections of one service currently forwarded to the gray.');
  const serviceTotal = new Family('relay_service_clients_total', 'counter', 'Clients of one service paired with a data connection of the gray.');
  const serviceRefused = new Family('relay_service_client_refusals_total', 'counter', "Clients on one service's public port closed before pairing, by reason (not in the allow-list, service missing on the gray, and the reasons of relay_client_refusals_total).");
  const serviceReceived = new Family('relay_service_client_received_bytes_total', 'counter', 'Bytes received from clients of one service (closed connections, plus live ones at scrape time).');
  const serviceSent = new Family('relay_service_client_sent_bytes_total', 'counter', 'Bytes sent to clients of one service (closed connections, plus live ones at scrape time).');
  for (const g of snapshot.grays) {
    const l = { gray: g.id };
    for (const s of g.services ?? []) {
      const ls = { gray: g.id, service: s.name };
      serviceActive.add(s.activeClients, ls);
      serviceTotal.add(s.clientsTotal, ls);
      for (const [reason, n] of sortedEntries(s.clientsRefused)) serviceRefused.add(n, { ...ls, reason });
      serviceReceived.add(s.bytesFromClients, ls);
      serviceSent.add(s.bytesToClients, ls);
    }
    portsBound.add(g.portsBound ? 1 : 0, l);
    bindFailures.add(g.bindFailures, l);
    grayConnected.add(g.connected ? 1 : 0, l);
    poolIdle.add(g.poolIdle, l);
    poolTarget.add(g.poolTarget, l);
    active.add(g.activeClients, l);
    pending.add(g.pendingClients, l);
    total.add(g.clientsTotal, l);
    for (const [reason, n] of sortedEntries(g.clientsRefused)) refused.add(n, { gray: g.id, reason });
    received.add(g.bytesFromClients, l);
    sent.add(g.bytesToClients, l);
    wait.addHistogram(g.clientWait, l);
    idleTimeouts.add(g.idleTimeouts, l);
    reused.add(g.dataConnectionsReused, l);
  }

  const dataRej = new Family('relay_data_rejections_total', 'counter', 'Connections to the data ports refused before joining a pool, by reason (bad preamble, replay, no credit, wrong source, timeout).');
  for (const [reason, n] of sortedEntries(c.dataRejections)) dataRej.add(n, { reason });
  const ctlRej = new Family('relay_control_rejections_total', 'counter', 'Control connections refused or closed before authentication, by reason.');
  for (const [reason, n] of sortedEntries(c.controlRejections)) ctlRej.add(n, { reason });
  const authFail = new Family('relay_auth_failures_total', 'counter', 'Gray logins refused for a wrong proof or an unknown id.').add(c.authFailures);
  const reloads = new Family('relay_reloads_total', 'counter', 'Configuration reloads, by result (ok: applied, rejected: the file was invalid and the running config kept).')
    .add(c.reloads.ok, { result: 'ok' })
    .add(c.reloads.rejected, { result: 'rejected' });
  const notApplied = new Family('relay_config_not_applied', 'gauge', 'Settings or grays of the last applied reload that are not in force (need a restart, or ports not bound yet).').add(
    c.lastReload?.notApplied?.length ?? 0,
  );

  const hookDeliveries = new Family('relay_hook_deliveries_total', 'counter', 'Webhook events settled, by result (delivered, or failed after all attempts).');
  const hookQueue = new Family('relay_hook_queued_events', 'gauge', 'Webhook events accepted and not yet settled, including the one in flight.');
  const hookDropped = new Family('relay_hook_dropped_events_total', 'counter', 'Webhook events dropped because the queue was full or the hook was closed.');
  for (const h of snapshot.hooks) {
    hookDeliveries.add(h.delivered, { url: h.url, result: 'delivered' }).add(h.failed, { url: h.url, result: 'failed' });
    hookQueue.add(h.queued, { url: h.url });
    hookDropped.add(h.dropped, { url: h.url });
  }
  const hookDuration = new Family('relay_hook_request_duration_seconds', 'histogram', 'Time from sending a hook request to its outcome (answer, timeout or error), seconds, by kind (authorize, webhook).');
  for (const [kind, h] of Object.entries(hookDurations)) hookDuration.addHistogram(h, { kind });

  const out: string[] = [];
  for (const fam of [
    ...processFamilies(dataPlane),
    graysConnected,
    grayConnected,
    poolIdle,
    poolTarget,
    active,
    pending,
    total,
    refused,
    received,
    sent,
    wait,
    portsBound,
    bindFailures,
    idleTimeouts,
    reused,
    serviceActive,
    serviceTotal,
    serviceRefused,
    serviceReceived,
    serviceSent,
    dataRej,
    ctlRej,
    authFail,
    reloads,
    notApplied,
    hookDeliveries,
    hookQueue,
    hookDropped,
    hookDuration,
  ]) {
    fam.render(out);
  }
  return `${out.join('\n')}\n`;
}

/** Stable output order, so two scrapes diff cleanly. */
export function sortedEntries(rec: Record<string, number>): Array<[string, number]> {
  return Object.entries(rec).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
