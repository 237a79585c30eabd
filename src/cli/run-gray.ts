// `relay gray --config gray.yaml`: load, start the status listener (if configured), keep a
// session with every white, stop on a signal.
import { GrayStatusServer } from '../admin/gray-status-server.js';
import { loadGrayConfigIsolated as loadGrayConfig } from '../config/isolated-load.js';
import { openDataPlane } from '../engine/substrate/data-plane.js';
import { WhiteSessions } from '../engine/gray/white-sessions.js';
import { createLogger } from '../log.js';
import { logDataPlane } from './data-plane-log.js';
import { releaseMemory } from './release-memory.js';
import { onStopSignal } from './signals.js';

/** The running gray: its sessions, one per white (state() lists them for a status page). */
export async function runGray(configPath: string): Promise<WhiteSessions> {
  const warnings: string[] = [];
  const config = await loadGrayConfig(configPath, { warnings });
  const logger = createLogger({ level: config.log.level, name: 'gray' });
  for (const warning of warnings) logger.warn({ path: configPath }, warning);
  const dataPlane = openDataPlane();
  logDataPlane(logger, dataPlane);
  const sessions = new WhiteSessions(config, logger, { dataPlane });
  const statusServer = config.status ? new GrayStatusServer(sessions, dataPlane.name) : null;
  if (config.status && statusServer) {
    await statusServer.listen(config.status);
    logger.info({ status: statusServer.address }, 'status listener');
  }
  await sessions.start();
  releaseMemory(dataPlane, logger, 'startup');
  onStopSignal(async (signal) => {
    logger.info({ signal }, 'stopping');
    await sessions.stop();
    await statusServer?.close();
    logger.info('stopped');
  });
  return sessions;
}
