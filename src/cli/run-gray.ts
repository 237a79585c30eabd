// `relay gray --config gray.yaml`: load, start the status listener (if configured) and the
// agent, stop on a signal.
import { loadGrayConfigIsolated as loadGrayConfig } from '../config/isolated-load.js';
import { resolveDataPlane } from '../engine/data-plane/join.js';
import { GrayStatusServer } from '../admin/gray-status-server.js';
import { GrayAgent } from '../engine/gray/agent.js';
import { createLogger } from '../log.js';
import { logDataPlane } from './data-plane-log.js';
import { releaseMemory } from './release-memory.js';
import { onStopSignal } from './signals.js';

export async function runGray(configPath: string): Promise<void> {
  const config = await loadGrayConfig(configPath);
  const logger = createLogger({ level: config.log.level, name: 'gray' });
  const agent = new GrayAgent(config, logger);
  logDataPlane(logger, resolveDataPlane(), { dialer: agent.dialerKind });
  const statusServer = config.status ? new GrayStatusServer(agent) : null;
  if (config.status && statusServer) {
    await statusServer.listen(config.status);
    logger.info({ status: statusServer.address }, 'status listener');
  }
  agent.start();
  releaseMemory(logger, 'startup');
  onStopSignal(async (signal) => {
    logger.info({ signal }, 'stopping');
    await agent.stop();
    await statusServer?.close();
    logger.info('stopped');
  });
}
