// A running gray as one thing: a session with every white (WhiteSessions) and the optional status
// listener. `relay gray` (src/cli/run-gray.ts) adds signal handling and the memory release;
// programs that embed relay get it through startGray (src/api.ts).
import { GrayStatusServer } from '../admin/gray-status-server.js';
import type { GrayConfigInput } from '../config/input.js';
import type { GrayConfig, HostPort } from '../config/types.js';
import { GrayAgent, type WhiteSessionState } from '../engine/gray/agent.js';
import { grayReady, type GrayStatus, type GrayWhiteStatus } from '../engine/gray/status.js';
import { WhiteSessions } from '../engine/gray/white-sessions.js';
import { engineThreadsState, type DataPlane, type EngineThreadsState } from '../engine/substrate/data-plane.js';
import { ErrorCodes, RelayError } from '../errors.js';
import type { Logger } from '../log.js';
import { VERSION } from '../version.js';
import { grayFrom, libraryLogger, processDataPlane, type StartOptions } from './process.js';

/** One white session: its counters (as /metrics has them) and its state now. */
export type GrayWhiteState = GrayWhiteStatus & Pick<WhiteSessionState, 'connectedSince' | 'activeForwards' | 'reconnectAttempts' | 'lastError'>;

/** The gray's status (what its status listener's /readyz and /metrics are made from), per white. */
export interface GrayState extends Omit<GrayStatus, 'whites'> {
  /** Connected to every white, each with at least one idle pooled connection (/readyz's 200). */
  readonly ready: boolean;
  readonly whites: readonly GrayWhiteState[];
  /** Configured host names whose last lookup failed, with the reason. */
  readonly resolveErrors: ReadonlyArray<{ readonly white: string; readonly error: string }>;
  readonly version: string;
  readonly dataPlane: 'splice' | 'js';
  /** The engine threads and what each runs and holds (null on the JS plane). */
  readonly engine: EngineThreadsState | null;
}

export interface LaunchedGray {
  readonly sessions: WhiteSessions;
  /** Where the status listener listens (null when the config has none). */
  readonly statusAddress: HostPort | null;
  state(): GrayState;
  ready(): Promise<void>;
  stop(drainMs?: number): Promise<void>;
}

export async function launchGray(config: GrayConfig, options: { readonly logger: Logger; readonly dataPlane: DataPlane }): Promise<LaunchedGray> {
  const { logger, dataPlane } = options;
  /** Waiters for readiness; each session's pool and connection events check again. */
  const waiters = new Set<{ done: () => void; fail: (err: Error) => void }>();
  let stopped: Promise<void> | null = null;
  const sessions = new WhiteSessions(config, logger, {
    dataPlane,
    createSession: (white, log, current) => {
      const agent = new GrayAgent(current, log, { white, dataPlane });
      agent.on('pool-ready', () => settle());
      return agent;
    },
  });
  const state = (): GrayState => {
    const status = sessions.status();
    const rows = new Map(sessions.state().map((s) => [s.white, s]));
    return {
      ...status,
      ready: grayReady(status),
      whites: status.whites.map((w) => {
        const row = rows.get(w.white);
        return { ...w, connectedSince: row?.connectedSince ?? null, activeForwards: row?.activeForwards ?? 0, reconnectAttempts: row?.reconnectAttempts ?? 0, lastError: row?.lastError ?? null };
      }),
      resolveErrors: sessions.resolveErrors(),
      version: VERSION,
      dataPlane: dataPlane.name,
      engine: engineThreadsState(dataPlane),
    };
  };
  const settle = (): void => {
    if (waiters.size === 0 || !grayReady(sessions.status())) return;
    for (const w of waiters) w.done();
    waiters.clear();
  };
  const statusServer = config.status ? new GrayStatusServer(sessions, dataPlane.name) : null;
  if (config.status && statusServer) {
    await statusServer.listen(config.status);
    logger.info({ status: statusServer.address }, 'status listener');
  }
  try {
    await sessions.start();
  } catch (err) {
    await sessions.stop(0);
    await statusServer?.close();
    throw err;
  }
  return {
    sessions,
    statusAddress: statusServer?.address ?? null,
    state,
    ready() {
      if (stopped !== null) return Promise.reject(new RelayError(ErrorCodes.SHUTDOWN, 'the gray was stopped'));
      if (grayReady(sessions.status())) return Promise.resolve();
      return new Promise<void>((done, fail) => waiters.add({ done, fail }));
    },
    stop(drainMs) {
      stopped ??= (async () => {
        for (const w of waiters) w.fail(new RelayError(ErrorCodes.SHUTDOWN, 'the gray was stopped before it was ready'));
        waiters.clear();
        await sessions.stop(drainMs);
        await statusServer?.close();
      })();
      return stopped;
    },
  };
}

/** A gray started by startGray. */
export interface RunningGray {
  /** Where its status listener (/healthz, /readyz, /metrics) listens; null: none configured. */
  readonly statusAddress: HostPort | null;
  /** A snapshot: each white session, its pool and counters, and whether the gray is ready. */
  state(): GrayState;
  /** Resolves once the gray is connected to every white with a non-empty pool (at once if it is
   *  now); rejects with RELAY_ERR_SHUTDOWN when it is stopped first. It keeps trying until then. */
  ready(): Promise<void>;
  /** Ends every white session; forwards in progress get up to drainMs (default
   *  limits.drain_timeout_ms). Calling it again returns the same promise. */
  stop(drainMs?: number): Promise<void>;
}

/**
 * Starts a gray in this process, from a file (a path), from an object with the keys of a file
 * (checked by the same schema), or from a config a loader returned. Resolves once its sessions
 * have started (not once they are connected: see ready()); rejects with a RelayError for a bad
 * config or a status listener that cannot listen. It installs no signal handlers.
 */
export async function startGray(config: string | GrayConfigInput | GrayConfig, options: StartOptions = {}): Promise<RunningGray> {
  const loaded = await grayFrom(config);
  const logger = libraryLogger(loaded.log.level, 'gray', options);
  const launched = await launchGray(loaded, { logger, dataPlane: processDataPlane(logger, loaded.engine.threads) });
  return { statusAddress: launched.statusAddress, state: launched.state, ready: launched.ready, stop: launched.stop };
}
