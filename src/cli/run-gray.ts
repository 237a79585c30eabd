// `relay gray --config gray.yaml`: load, start the gray (its sessions with every white and the
// status listener, src/api/gray.ts), reload the file when it changes (watch + SIGHUP), stop on a
// signal.
import { launchGray, type LaunchedGray } from '../api/gray.js';
import { loadGrayConfigIsolated as loadGrayConfig } from '../config/isolated-load.js';
import { openDataPlane } from '../engine/substrate/data-plane.js';
import { createLogger } from '../log.js';
import { logDataPlane } from './data-plane-log.js';
import { releaseMemory } from './release-memory.js';
import { onStopSignal } from './signals.js';
import { GrayReloader } from './gray-reloader.js';
import { watchConfigFile } from '../config/watch.js';

/** The running gray: its sessions, one per white, and its status. */
export async function runGray(configPath: string): Promise<LaunchedGray> {
  const warnings: string[] = [];
  const config = await loadGrayConfig(configPath, { warnings });
  const logger = createLogger({ level: config.log.level, name: 'gray' });
  for (const warning of warnings) logger.warn({ path: configPath }, warning);
  // SIGHUP reloads; until the reloader exists it is only logged (an unhandled SIGHUP would end
  // the process, and systemd counts that as a clean exit, so Restart=on-failure would not help).
  let reload: GrayReloader | null = null;
  process.on('SIGHUP', () => (reload ? void reload.run('SIGHUP') : logger.warn({ path: configPath }, 'SIGHUP during startup ignored')));
  const dataPlane = openDataPlane(config.engine.threads ?? undefined);
  logDataPlane(logger, dataPlane);
  const gray = await launchGray(config, { logger, dataPlane });
  // The same watcher as the white's, with its defaults (a gray's file has no watch settings).
  const reloader = new GrayReloader(configPath, gray.sessions, logger, config.engine.threads);
  reload = reloader;
  const watcher = watchConfigFile(configPath, {
    polling: false,
    debounceMs: 200,
    onChange: () => void reloader.run('file changed'),
    onError: (err) => logger.warn({ err }, 'config watcher problem; edits may be picked up late (SIGHUP reloads)'),
  });
  await watcher.ready.catch(() => {});
  releaseMemory(dataPlane, logger, 'startup');
  onStopSignal(async (signal) => {
    logger.info({ signal }, 'stopping');
    await watcher.close();
    await gray.stop();
    logger.info('stopped');
  });
  return gray;
}
