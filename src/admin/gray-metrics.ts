// The gray's metrics, rendered from its status at scrape time (docs/metrics.md lists them).
import type { GrayStatus } from '../engine/gray/status.js';
import type { DataPlaneName } from '../engine/substrate/pair.js';
import { Family } from './metrics-format.js';
import { processFamilies } from './process-metrics.js';

export function renderGrayMetrics(s: GrayStatus, dataPlane: DataPlaneName): string {
  const g = { gray: s.id };
  const connected = new Family('relay_gray_session_connected', 'gauge', '1 if the gray has an authenticated control session with the white, else 0.');
  const sessions = new Family('relay_gray_sessions_total', 'counter', 'Authenticated control sessions with the white since the gray started.');
  const reconnects = new Family('relay_gray_reconnects_total', 'counter', 'Reconnects to the white scheduled after a failed connect or a lost session.');
  const idle = new Family('relay_gray_pool_idle_connections', 'gauge', 'Idle pre-opened data connections to the white.');
  const target = new Family('relay_gray_pool_target_connections', 'gauge', 'Pool size the white asked for (0 while not connected).');
  for (const w of s.whites) {
    const l = { ...g, white: w.white };
    connected.add(w.connected ? 1 : 0, l);
    sessions.add(w.sessions, l);
    reconnects.add(w.reconnects, l);
    idle.add(w.poolIdle, l);
    target.add(w.poolTarget, l);
  }
  const out: string[] = [];
  for (const fam of [
    ...processFamilies(dataPlane),
    connected,
    sessions,
    reconnects,
    idle,
    target,
    new Family('relay_gray_forwards_active', 'gauge', 'Clients being forwarded to the local service now.').add(s.activeForwards, g),
    new Family('relay_gray_forwards_total', 'counter', 'Forwards ended (a client forwarded to the local service, or a failed attempt).').add(s.forwardsTotal, g),
    new Family('relay_gray_service_sent_bytes_total', 'counter', 'Bytes from clients sent to the local service (counted when a forward ends).').add(s.bytesToService, g),
    new Family('relay_gray_service_received_bytes_total', 'counter', 'Bytes from the local service sent back to clients (counted when a forward ends).').add(s.bytesFromService, g),
    new Family('relay_gray_service_connect_failures_total', 'counter', 'Forwards whose connect to the local service failed (refused, unreachable, timed out).').add(s.serviceConnectFailures, g),
  ]) {
    fam.render(out);
  }
  return `${out.join('\n')}\n`;
}
