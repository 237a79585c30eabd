// A running white as one thing: the engine (WhiteServer), its webhooks and authorize hook, the
// admin API with its metrics listener, and the dashboard, all as the config says. `relay white`
// (src/cli/run-white.ts) adds to it what belongs to a process on its own: the file watcher,
// SIGHUP, the console, signal handling and the memory release. Programs that embed relay get it
// through startWhite (src/api.ts).
import { AdminServer, type AdminState, type ReloadOutcome } from '../admin/server.js';
import { Reloader } from '../cli/reloader.js';
import type { WhiteConfigInput } from '../config/input.js';
import type { HostPort, WhiteConfig, WhiteOverrides } from '../config/types.js';
import { Dashboard } from '../dashboard/dashboard.js';
import { engineThreadsState, type DataPlane } from '../engine/substrate/data-plane.js';
import { WhiteServer } from '../engine/white/white-server.js';
import { WhiteHooks } from '../hooks/white-hooks.js';
import type { Logger } from '../log.js';
import { VERSION } from '../version.js';
import { libraryLogger, processDataPlane, whiteFrom, type StartOptions } from './process.js';

/** What `GET /v1/state` and `relayctl show --json` show: every gray with its ports, session,
 *  pool and counters; the white's counters and webhook deliveries; its version and data plane. */
export type WhiteState = AdminState;

export interface LaunchWhiteOptions {
  readonly logger: Logger;
  readonly dataPlane: DataPlane;
  /** The file the config came from, with its command-line overrides: the admin API's reload
   *  re-reads it. Without one the admin API's reload says there is no file. */
  readonly file?: { readonly path: string; readonly overrides: WhiteOverrides };
}

export interface LaunchedWhite {
  readonly server: WhiteServer;
  readonly hooks: WhiteHooks;
  readonly admin: AdminServer;
  readonly dashboard: Dashboard | null;
  /** Re-reads the file and applies it (null when not started from a file). */
  readonly reloader: Reloader | null;
  state(): WhiteState;
  /** Admin first (so relayctl says "not running" rather than showing a white going away), then
   *  the dashboard, the engine (draining up to drainMs), and the webhooks. */
  stop(drainMs?: number): Promise<void>;
}

export async function launchWhite(config: WhiteConfig, options: LaunchWhiteOptions): Promise<LaunchedWhite> {
  const { logger, dataPlane } = options;
  const hooks = new WhiteHooks(config, logger);
  const server = new WhiteServer(config, { dataPlane, logger, events: hooks, gates: hooks.gates(), hookStats: () => hooks.stats() });
  // Its feed hears every event from the start, so the page's event list misses none.
  const dashboard = config.dashboard === null ? null : new Dashboard(config.dashboard, { snapshot: () => server.snapshot(), version: VERSION }, logger);
  if (dashboard !== null) hooks.tap(dashboard.events);
  await server.start();

  const reloader = options.file ? new Reloader(options.file.path, server, logger, hooks, options.file.overrides) : null;
  const state = (): WhiteState => ({ ...server.snapshot(), version: VERSION, dataPlane: dataPlane.name, engine: engineThreadsState(dataPlane) });
  const reload = async (): Promise<ReloadOutcome> => {
    if (reloader === null) return { ok: false, at: Date.now(), error: 'this white was started from a config object: there is no file to reload', notApplied: [] };
    // Reloads are serialized; when one was already running, Reloader queues one more and the
    // outcome read here is the one that was running. See the note in docs/relayctl.md.
    await reloader.run('admin API');
    const last = server.counters.lastReload;
    return last === null ? { ok: false, at: Date.now(), error: 'no reload has run', notApplied: [] } : { ok: last.ok, at: last.at, error: last.error, notApplied: last.notApplied };
  };
  // Admin, metrics and dashboard listeners are taken from the config at start; changing them
  // needs a restart (a reload says so, see RESTART_NEEDED in white-server.ts).
  const admin = new AdminServer({ socket: config.admin.socket, tcp: config.admin.tcp, metrics: config.metrics, logger }, { state, reload, grayReadiness: (id) => server.grayReadiness(id) });
  try {
    await admin.start();
    await dashboard?.start();
  } catch (err) {
    await admin.close();
    await dashboard?.close();
    await server.stop(0);
    await hooks.close();
    throw err;
  }
  let stopped: Promise<void> | null = null;
  return {
    server,
    hooks,
    admin,
    dashboard,
    reloader,
    state,
    stop(drainMs) {
      stopped ??= (async () => {
        await admin.close();
        await dashboard?.close();
        await server.stop(drainMs);
        await hooks.close();
      })();
      return stopped;
    },
  };
}

/** Where a running white listens: the ports the OS chose for port 0. Null: not configured. */
export interface WhiteListening {
  readonly control: HostPort;
  readonly adminSocket: string | null;
  readonly adminTcp: HostPort | null;
  readonly metrics: HostPort | null;
  readonly dashboard: HostPort | null;
}

/** A white started by startWhite. */
export interface RunningWhite {
  /** The TLS control port it listens on (the one the OS chose, for port 0). */
  readonly controlPort: number;
  /** Every address it listens on but the grays' ports (those are in state().grays). */
  readonly listening: WhiteListening;
  /** SHA-256 fingerprint of its TLS certificate (fresh at each start), as its grays log it. */
  readonly fingerprint: string;
  /** A snapshot: each gray's bound ports (the OS's choice for port 0), session, pool and counters. */
  state(): WhiteState;
  /**
   * Stops accepting, ends the gray sessions, lets active clients finish for up to drainMs
   * (default limits.drain_timeout_ms), then closes what is left and the admin, metrics and
   * dashboard listeners. Calling it again returns the same promise.
   */
  stop(drainMs?: number): Promise<void>;
}

/**
 * Starts a white in this process, from a file (a path), from an object with the keys of a file
 * (checked by the same schema), or from a config a loader returned. Resolves once it listens on
 * every port the config names; rejects with a RelayError (code RELAY_ERR_CONFIG_*, or
 * RELAY_ERR_LISTEN) otherwise. It installs no signal handlers and watches no file.
 */
export async function startWhite(config: string | WhiteConfigInput | WhiteConfig, options: StartOptions = {}): Promise<RunningWhite> {
  const file = typeof config === 'string' ? config : null;
  const loaded = await whiteFrom(config);
  const logger = libraryLogger(loaded.log.level, 'white', options);
  const launched = await launchWhite(loaded, { logger, dataPlane: processDataPlane(logger, loaded.engine.threads), ...(file !== null ? { file: { path: file, overrides: {} } } : {}) });
  return {
    get controlPort() {
      return launched.server.controlPort;
    },
    get listening() {
      const admin = launched.admin.addresses;
      return {
        control: { host: loaded.control.host, port: launched.server.controlPort },
        adminSocket: admin.socket,
        adminTcp: admin.tcp,
        metrics: admin.metrics,
        dashboard: launched.dashboard?.address ?? null,
      };
    },
    get fingerprint() {
      return launched.server.fingerprint;
    },
    state: launched.state,
    stop: launched.stop,
  };
}
