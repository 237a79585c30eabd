// `relay white --config white.yaml`: load, start, then keep the running server in step with
// the file (watch + SIGHUP + POST /v1/reload → Reloader), serve the admin API, metrics and the
// dashboard, and run the console when asked.
import { AdminServer, type AdminState, type ReloadOutcome } from '../admin/server.js';
import { loadWhiteConfigIsolated as loadWhiteConfig } from '../config/isolated-load.js';
import { ephemeralOverlap, ephemeralPortRange } from '../config/ports.js';
import type { WhiteOverrides } from '../config/types.js';
import { watchConfigFile } from '../config/watch.js';
import { Dashboard } from '../dashboard/dashboard.js';
import { openDataPlane } from '../engine/substrate/data-plane.js';
import { WhiteServer } from '../engine/white/white-server.js';
import { WhiteHooks } from '../hooks/white-hooks.js';
import { createLogger } from '../log.js';
import { logDataPlane } from './data-plane-log.js';
import { Reloader } from './reloader.js';
import { releaseMemory, watchBursts } from './release-memory.js';
import { PromptGuard } from './prompt-guard.js';
import { onStopSignal } from './signals.js';
import { VERSION } from '../version.js';

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
  const dataPlane = openDataPlane();
  logDataPlane(logger, dataPlane);
  if (config.portsRange) {
    const overlap = ephemeralOverlap(config.portsRange, await ephemeralPortRange());
    if (overlap) logger.warn({ portsRange: `${config.portsRange.from}-${config.portsRange.to}` }, overlap);
  }
  const hooks = new WhiteHooks(config, logger);
  const server = new WhiteServer(config, { dataPlane, logger, events: hooks, gates: hooks.gates(), hookStats: () => hooks.stats() });
  // Its feed hears every event from the start, so the page's event list misses none.
  const dashboard = config.dashboard === null ? null : new Dashboard(config.dashboard, { snapshot: () => server.snapshot(), version: VERSION }, logger);
  if (dashboard !== null) hooks.tap(dashboard.events);
  await server.start();

  const reload = new Reloader(configPath, server, logger, hooks, overrides);
  const watcher = watchConfigFile(configPath, {
    polling: config.watch.polling,
    debounceMs: config.watch.debounceMs,
    onChange: () => void reload.run('file changed'),
    onError: (err) => logger.warn({ err }, 'config watcher problem; edits may be picked up late (SIGHUP reloads)'),
  });
  process.on('SIGHUP', () => void reload.run('SIGHUP'));
  // Edits saved from here on are seen; relayctl users (and tests) wait for "admin listening".
  await watcher.ready.catch(() => {});

  const state = (): AdminState => ({ ...server.snapshot(), version: VERSION, dataPlane: dataPlane.name });
  const reloadNow = async (): Promise<ReloadOutcome> => {
    // Reloads are serialized; when one was already running, Reloader queues one more and the
    // outcome read here is the one that was running. See the note in docs/relayctl.md.
    await reload.run('admin API');
    const last = server.counters.lastReload;
    return last === null ? { ok: false, at: Date.now(), error: 'no reload has run', notApplied: [] } : { ok: last.ok, at: last.at, error: last.error, notApplied: last.notApplied };
  };
  // Admin, metrics and dashboard listeners are taken from the config at start; changing them
  // needs a restart (a reload says so, see RESTART_NEEDED in white-server.ts).
  const admin = new AdminServer({ socket: config.admin.socket, tcp: config.admin.tcp, metrics: config.metrics, logger }, { state, reload: reloadNow, grayReadiness: (id) => server.grayReadiness(id) });
  try {
    await admin.start();
    await dashboard?.start();
  } catch (err) {
    await admin.close();
    await watcher.close();
    await server.stop(0);
    await hooks.close();
    throw err;
  }
  logger.info({ ...admin.addresses }, 'admin listening');
  const stopBurstWatch = watchBursts(dataPlane, logger, () => server.clientsServed());

  // Loaded only for a person at a terminal: it brings the config editor (yaml, ajv) with it,
  // which a white in production never needs in its own heap.
  const whiteConsole = options.console
    ? (await import('./console.js')).startConsole({
        configPath,
        state,
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
    // First, so relayctl says "not running" rather than showing a white that is going away.
    await admin.close();
    await dashboard?.close();
    await watcher.close();
    await server.stop();
    await hooks.close();
  });
  // After the stop handlers: the release holds this thread for a few hundred milliseconds, and a
  // SIGTERM arriving meanwhile must drain, not kill.
  releaseMemory(dataPlane, logger, 'startup');
}
