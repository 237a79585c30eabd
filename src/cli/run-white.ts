// `relay white --config white.yaml`: load, start the white (engine, hooks, admin API, metrics and
// dashboard: src/api/white.ts), then keep it in step with the file (watch + SIGHUP + POST
// /v1/reload → Reloader), and run the console when asked.
import { launchWhite } from '../api/white.js';
import { loadWhiteConfigIsolated as loadWhiteConfig } from '../config/isolated-load.js';
import { ephemeralOverlap, ephemeralPortRange } from '../config/ports.js';
import type { WhiteOverrides } from '../config/types.js';
import { watchConfigFile } from '../config/watch.js';
import { openDataPlane } from '../engine/substrate/data-plane.js';
import { createLogger } from '../log.js';
import { logDataPlane } from './data-plane-log.js';
import { releaseMemory, watchBursts } from './release-memory.js';
import { PromptGuard } from './prompt-guard.js';
import { onStopSignal } from './signals.js';

export interface RunWhiteOptions {
  readonly console: boolean;
  /** Per-host settings from the command line; they win over the file, across reloads. */
  readonly overrides?: WhiteOverrides;
}

export async function runWhite(configPath: string, options: RunWhiteOptions): Promise<void> {
  const overrides = options.overrides ?? {};
  const warnings: string[] = [];
  const config = await loadWhiteConfig(configPath, { warnings, overrides });
  // With the console on, log lines step around its prompt (both are on the terminal).
  const guard = options.console ? new PromptGuard() : undefined;
  const logger = createLogger({ level: config.log.level, name: 'white', ...(guard ? { guard } : {}) });
  for (const warning of warnings) logger.warn({ path: configPath }, warning);
  if (Object.keys(overrides).length > 0) logger.info({ overrides }, 'command-line settings override the file');
  const dataPlane = openDataPlane(config.engine.threads ?? undefined);
  logDataPlane(logger, dataPlane);
  if (config.portsRange) {
    const overlap = ephemeralOverlap(config.portsRange, await ephemeralPortRange());
    if (overlap) logger.warn({ portsRange: `${config.portsRange.from}-${config.portsRange.to}` }, overlap);
  }
  const white = await launchWhite(config, { logger, dataPlane, file: { path: configPath, overrides } });
  const { server } = white;
  // launchWhite makes one for a white started from a file, as this one is.
  const reload = white.reloader;
  if (reload === null) throw new Error('no reloader for a white started from a file');
  const watcher = watchConfigFile(configPath, {
    polling: config.watch.polling,
    debounceMs: config.watch.debounceMs,
    onChange: () => void reload.run('file changed'),
    onError: (err) => logger.warn({ err }, 'config watcher problem; edits may be picked up late (SIGHUP reloads)'),
  });
  process.on('SIGHUP', () => void reload.run('SIGHUP'));
  // Edits saved from here on are seen; relayctl users (and tests) wait for "admin listening".
  await watcher.ready.catch(() => {});
  logger.info({ ...white.admin.addresses }, 'admin listening');
  const stopBurstWatch = watchBursts(dataPlane, logger, () => server.clientsServed());

  // Loaded only for a person at a terminal: it brings the config editor (yaml, ajv) with it,
  // which a white in production never needs in its own heap.
  const whiteConsole = options.console
    ? (await import('./console.js')).startConsole({
        configPath,
        state: white.state,
        input: process.stdin,
        output: process.stderr,
        onInterrupt: () => process.kill(process.pid, 'SIGINT'),
        onQuit: () => process.kill(process.pid, 'SIGINT'),
        ...(guard ? { guard } : {}),
      })
    : null;

  onStopSignal(async (signal) => {
    logger.info({ signal }, 'stopping');
    whiteConsole?.close();
    stopBurstWatch();
    await watcher.close();
    await white.stop();
  });
  // After the stop handlers: the release holds this thread for a few hundred milliseconds, and a
  // SIGTERM arriving meanwhile must drain, not kill.
  releaseMemory(dataPlane, logger, 'startup');
}
