// `relay gray --config gray.yaml`: load, start the status listener (if configured), keep a
// session with every white, reload the file when it changes (watch + SIGHUP), stop on a signal.
import { GrayStatusServer } from '../admin/gray-status-server.js';
import { loadGrayConfigIsolated as loadGrayConfig } from '../config/isolated-load.js';
import { openDataPlane } from '../engine/substrate/data-plane.js';
import { WhiteSessions } from '../engine/gray/white-sessions.js';
import { createLogger } from '../log.js';
import { logDataPlane } from './data-plane-log.js';
import { releaseMemory } from './release-memory.js';
import { onStopSignal } from './signals.js';
import { GrayReloader } from './gray-reloader.js';
import { watchConfigFile } from '../config/watch.js';

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
  // The same watcher as the white's, with its defaults (a gray's file has no watch settings).
  const reload = new GrayReloader(configPath, sessions, logger);
  const watcher = watchConfigFile(configPath, {
    polling: false,
    debounceMs: 200,
    onChange: () => void reload.run('file changed'),
    onError: (err) => logger.warn({ err }, 'config watcher problem; edits may be picked up late (SIGHUP reloads)'),
  });
  process.on('SIGHUP', () => void reload.run('SIGHUP'));
  await watcher.ready.catch(() => {});
  releaseMemory(dataPlane, logger, 'startup');
  onStopSignal(async (signal) => {
    logger.info({ signal }, 'stopping');
    await watcher.close();
    await sessions.stop();
    await statusServer?.close();
    logger.info('stopped');
  });
  return sessions;
}
