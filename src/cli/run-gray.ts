// `relay gray --config gray.yaml`: load, start the gray (its sessions with every white and the
// status listener, src/api/gray.ts), stop on a signal.
import { launchGray, type LaunchedGray } from '../api/gray.js';
import { loadGrayConfigIsolated as loadGrayConfig } from '../config/isolated-load.js';
import { openDataPlane } from '../engine/substrate/data-plane.js';
import { createLogger } from '../log.js';
import { logDataPlane } from './data-plane-log.js';
import { releaseMemory } from './release-memory.js';
import { onStopSignal } from './signals.js';

/** The running gray: its sessions, one per white, and its status. */
export async function runGray(configPath: string): Promise<LaunchedGray> {
  const warnings: string[] = [];
  const config = await loadGrayConfig(configPath, { warnings });
  const logger = createLogger({ level: config.log.level, name: 'gray' });
  for (const warning of warnings) logger.warn({ path: configPath }, warning);
  const dataPlane = openDataPlane();
  logDataPlane(logger, dataPlane);
  const gray = await launchGray(config, { logger, dataPlane });
  releaseMemory(dataPlane, logger, 'startup');
  onStopSignal(async (signal) => {
    logger.info({ signal }, 'stopping');
    await gray.stop();
    logger.info('stopped');
  });
  return gray;
}
