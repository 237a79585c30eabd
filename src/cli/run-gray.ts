// `relay gray --config gray.yaml`: load, start the agent, stop on a signal.
import { loadGrayConfigIsolated as loadGrayConfig } from '../config/isolated-load.js';
import { openDataPlane } from '../engine/substrate/data-plane.js';
import { GrayAgent } from '../engine/gray/agent.js';
import { createLogger } from '../log.js';
import { logDataPlane } from './data-plane-log.js';
import { releaseMemory } from './release-memory.js';
import { onStopSignal } from './signals.js';

export async function runGray(configPath: string): Promise<void> {
  const warnings: string[] = [];
  const config = await loadGrayConfig(configPath, { warnings });
  const logger = createLogger({ level: config.log.level, name: 'gray' });
  for (const warning of warnings) logger.warn({ path: configPath }, warning);
  const dataPlane = openDataPlane();
  logDataPlane(logger, dataPlane);
  const agent = new GrayAgent(config, logger, { dataPlane });
  agent.start();
  releaseMemory(dataPlane, logger, 'startup');
  onStopSignal(async (signal) => {
    logger.info({ signal }, 'stopping');
    await agent.stop();
    logger.info('stopped');
  });
}
