// Which data plane moves this process's bytes, decided once at startup: an engine (native/,
// splice(2)), or the JS plane (Node sockets and stream.pipe) where the engine cannot be built or
// RELAY_DATA_PLANE=js asks for it. The result is passed to the white server and the gray agent;
// nothing else decides. RELAY_DATA_PLANE=auto|splice|js (auto by default); `splice` makes a
// missing engine an error at startup instead of a silent fallback.
import type { Socket } from 'node:net';
import { availableParallelism } from 'node:os';
import { ErrorCodes, RelayError } from '../../errors.js';
import { Engine, ENGINE_THREADS_MAX } from './engine.js';
import type { DataPlaneName } from './pair.js';

export type DataPlane =
  | { readonly name: 'splice'; readonly engine: Engine; readonly note: null }
  /** note: why the engine is not in use. */
  | { readonly name: 'js'; readonly engine: null; readonly note: string };

type Choice = 'auto' | DataPlaneName;

function choice(): Choice {
  const value = process.env.RELAY_DATA_PLANE ?? 'auto';
  if (value === 'auto' || value === 'splice' || value === 'js') return value;
  throw new RelayError(ErrorCodes.USAGE, `RELAY_DATA_PLANE=${value}: expected auto, splice or js`);
}

/** engine.threads' default: one thread per core this process may use, at most
 *  ENGINE_THREADS_MAX. */
export function defaultEngineThreads(): number {
  return Math.min(availableParallelism(), ENGINE_THREADS_MAX);
}

/** How many engine threads: RELAY_ENGINE_THREADS when set (it wins over the file, as
 *  RELAY_DATA_PLANE does), else the config's engine.threads, else defaultEngineThreads(). */
export function engineThreads(configured?: number): number {
  const value = process.env.RELAY_ENGINE_THREADS;
  if (value === undefined || value === '') return configured ?? defaultEngineThreads();
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > ENGINE_THREADS_MAX) throw new RelayError(ErrorCodes.USAGE, `RELAY_ENGINE_THREADS=${value}: expected a whole number from 1 to ${ENGINE_THREADS_MAX}`);
  return n;
}

/** Starts this process's data plane as RELAY_DATA_PLANE says, with engineThreads(threads)
 *  engine threads; throws when it asks for what cannot be had. Call once, at startup. */
export function openDataPlane(threads?: number): DataPlane {
  const wanted = choice();
  if (wanted === 'js') return jsDataPlane('RELAY_DATA_PLANE=js');
  const engine = Engine.open(engineThreads(threads));
  if (typeof engine !== 'string') return { name: 'splice', engine, note: null };
  if (wanted === 'splice') throw new RelayError(ErrorCodes.DATA_PLANE_UNAVAILABLE, `RELAY_DATA_PLANE=splice, but the native splice plane cannot start: ${engine}`);
  return jsDataPlane(engine);
}

/** What the state reports of the engine threads: how many, and per thread the pairs it runs
 *  and the connections it holds (accepted or dialed, not yet in a pair), to see the load
 *  spread. null on the JS plane. */
export interface EngineThreadsState {
  readonly threads: number;
  readonly perThread: ReadonlyArray<{ readonly pairs: number; readonly heldConnections: number }>;
}

export function engineThreadsState(plane: DataPlane): EngineThreadsState | null {
  if (!plane.engine) return null;
  const stats = plane.engine.stats();
  return { threads: stats.threads.length, perThread: stats.threads.map((t) => ({ pairs: t.pairs, heldConnections: t.conns })) };
}

export function jsDataPlane(note: string): DataPlane {
  return { name: 'js', engine: null, note };
}

/** Socket options for every Node socket on the data path (the JS plane). */
export function tuneDataSocket(socket: Socket, keepAliveDelayMs: number): void {
  socket.setNoDelay(true);
  socket.setKeepAlive(true, keepAliveDelayMs);
}
