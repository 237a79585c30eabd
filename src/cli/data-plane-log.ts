// One startup line saying which data plane moves the bytes, and a warning when the fast one
// was wanted but is missing (so a slow relay is never a mystery). On the white it also says who
// accepts on the gray ports (intake), on the gray who opens the pool's connections (dialer):
// the native engine, or Node's sockets.
import type { DataPlaneStatus } from '../engine/data-plane/join.js';
import type { Logger } from '../log.js';

export function logDataPlane(logger: Logger, status: DataPlaneStatus, who: { intake: 'native' | 'node' } | { dialer: 'native' | 'node' }): void {
  if (status.plane === 'splice' || status.note === 'RELAY_DATA_PLANE=js') {
    logger.info({ dataPlane: status.plane, ...who, ...(status.note ? { why: status.note } : {}) }, 'data plane');
    return;
  }
  logger.warn({ dataPlane: status.plane, why: status.note }, 'native splice data plane unavailable; using the JavaScript data plane (slower; see docs/performance.md)');
}
