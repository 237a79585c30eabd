// The native data plane (native/splice_relay.cc): a joined pair is handed to an engine thread
// that moves its bytes with splice(2), never through JavaScript. The handoff is the delicate
// part, and all of it is here:
// - only a socket with nothing left to write may be handed over (a queued write would be lost
//   when the JS socket is destroyed); anything else stays on the JS plane;
// - bytes Node already read into a stream's buffer are taken out and sent ahead of the spliced
//   ones, together with the caller's heads;
// - the engine duplicates both descriptors, and the JS sockets are destroyed at once: an open
//   pair costs no JS objects beyond one small record, and closing Node's descriptor does not
//   close the connection (the duplicate keeps it open).
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Heads, JoinedPair, OnPairClosed } from './joined-pair.js';

interface SpliceBinding {
  init(onFinished: (id: number, bytesFromA: number, bytesFromB: number, errno: number) => void): void;
  join(fdA: number, fdB: number, headToA: Buffer | null, headToB: Buffer | null): number;
  destroy(id: number): void;
  bytes(id: number): [number, number] | null;
  stats(): { pairs: number; pipes: number };
}

interface OpenPair {
  readonly onClosed: OnPairClosed;
  /** What the JS sockets had read before the handoff; the engine counts from zero. */
  readonly baseA: number;
  readonly baseB: number;
}

/** From dist/src/engine/data-plane/ to the package root. */
const MODULE_PATH = fileURLToPath(new URL('../../../../native/build/Release/relay_splice.node', import.meta.url));
const ECANCELED = os.constants.errno.ECANCELED;
const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([name, value]) => [value, name]));

let binding: SpliceBinding | null = null;
let loadError: string | null = null;
let loaded = false;
const open = new Map<number, OpenPair>();

/** The started engine, or null with the reason in spliceUnavailableReason(). Loaded once. */
function engine(): SpliceBinding | null {
  if (loaded) return binding;
  loaded = true;
  if (process.platform !== 'linux') {
    loadError = `splice(2) is Linux only (this is ${process.platform})`;
    return null;
  }
  try {
    const candidate = createRequire(import.meta.url)(MODULE_PATH) as SpliceBinding;
    candidate.init(onFinished);
    binding = candidate;
  } catch (err) {
    loadError = `${MODULE_PATH}: ${err instanceof Error ? err.message : String(err)}`;
  }
  return binding;
}

function onFinished(id: number, bytesFromA: number, bytesFromB: number, errno: number): void {
  const pair = open.get(id);
  if (!pair) return;
  open.delete(id);
  const error = errno === 0 || errno === ECANCELED ? null : errnoError(errno);
  pair.onClosed({ bytesFromA: pair.baseA + bytesFromA, bytesFromB: pair.baseB + bytesFromB, error });
}

function errnoError(errno: number): Error {
  const name = errnoNames.get(errno) ?? `errno ${errno}`;
  return Object.assign(new Error(`splice ${name}`), { code: name, errno: -errno });
}

export function spliceAvailable(): boolean {
  return engine() !== null;
}

export function spliceUnavailableReason(): string | null {
  engine();
  return loadError;
}

/** Live pairs and pipes held by the engine (for metrics and tests). */
export function spliceStats(): { pairs: number; pipes: number } {
  return engine()?.stats() ?? { pairs: 0, pipes: 0 };
}

/** Hands the pair to the engine, or returns null (nothing touched) when it cannot take it. */
export function joinWithSplice(a: Socket, b: Socket, heads: Heads, onClosed: OnPairClosed): JoinedPair | null {
  const native = engine();
  if (!native) return null;
  const fdA = descriptorOf(a);
  const fdB = descriptorOf(b);
  if (fdA === null || fdB === null || !readyForHandoff(a) || !readyForHandoff(b)) return null;
  const headToA = concat(heads.toA, takeBuffered(b));
  const headToB = concat(heads.toB, takeBuffered(a));
  const baseA = a.bytesRead;
  const baseB = b.bytesRead;
  let id: number;
  try {
    id = native.join(fdA, fdB, headToA, headToB);
  } catch (err) {
    // Out of descriptors, typically. The buffered bytes are already taken, so the pair cannot
    // fall back to the JS plane intact: end it, as the JS plane would on a socket error.
    a.destroy();
    b.destroy();
    queueMicrotask(() => onClosed({ bytesFromA: baseA, bytesFromB: baseB, error: err instanceof Error ? err : new Error(String(err)) }));
    return { plane: 'splice', bytesFromA: () => baseA, bytesFromB: () => baseB, destroy: () => {} };
  }
  open.set(id, { onClosed, baseA, baseB });
  a.destroy();
  b.destroy();
  let last: [number, number] = [0, 0];
  const live = (): [number, number] => (last = native.bytes(id) ?? last);
  return {
    plane: 'splice',
    bytesFromA: () => baseA + live()[0],
    bytesFromB: () => baseB + live()[1],
    destroy: () => native.destroy(id),
  };
}

function descriptorOf(socket: Socket): number | null {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : null;
}

function readyForHandoff(socket: Socket): boolean {
  return !socket.destroyed && !socket.connecting && !socket.writableEnded && socket.writableLength === 0;
}

/** Everything the stream has read but nobody consumed. read() may ask libuv to read again, but
 *  that only happens on a later turn of the event loop, after the socket is destroyed. */
function takeBuffered(socket: Socket): Buffer | null {
  const chunks: Buffer[] = [];
  for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) chunks.push(chunk);
  return chunks.length === 0 ? null : Buffer.concat(chunks);
}

function concat(first: Buffer | undefined, second: Buffer | null): Buffer | null {
  if (!first) return second;
  return second ? Buffer.concat([first, second]) : first;
}
