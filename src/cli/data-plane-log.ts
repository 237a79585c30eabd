// One startup line saying which data plane moves the bytes (and so who accepts and dials: the
// engine, or Node's sockets), and a warning when the fast one was wanted but is missing (so a
// slow relay is never a mystery).
import type { DataPlane } from '../engine/substrate/data-plane.js';
import type { Logger } from '../log.js';

export function logDataPlane(logger: Logger, status: DataPlane): void {
  if (status.name === 'splice' || status.note === 'RELAY_DATA_PLANE=js') {
    logger.info({ dataPlane: status.name, ...(status.engine ? { threads: status.engine.threads } : {}), ...(status.note ? { why: status.note } : {}) }, 'data plane');
    return;
  }
  logger.warn({ dataPlane: status.name, why: status.note }, 'native splice data plane unavailable; using the JavaScript data plane (slower; see docs/performance.md)');
}
