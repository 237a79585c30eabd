// `relay gray --config gray.yaml`: load, start the gray (its sessions with every white and the
// status listener, src/api/gray.ts), stop on a signal. A gray reads its file once: SIGHUP (which
// would end a Node process that does not handle it, and which systemd counts as a clean exit, so
// Restart=on-failure would leave the gray down) is answered with a warning instead.
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
  process.on('SIGHUP', () => logger.warn({ path: configPath }, 'SIGHUP ignored: a gray reads its config file only at start; restart it to apply a changed file'));
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
