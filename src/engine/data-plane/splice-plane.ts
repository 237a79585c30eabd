// The native data plane (native/, see engine.h): a joined pair is handed to an engine thread
// that moves its bytes with splice(2), never through JavaScript. The handoff is the delicate
// part, and all of it is here:
// - only a socket with nothing left to write may be handed over (a queued write would be lost
//   when the JS socket is destroyed); anything else stays on the JS plane;
// - bytes Node already read into a stream's buffer are taken out and sent ahead of the spliced
//   ones, together with the caller's heads;
// - the engine duplicates both descriptors, and the JS sockets are destroyed at once: an open
//   pair costs no JS objects beyond one small record, and closing Node's descriptor does not
//   close the connection (the duplicate keeps it open).
import type { Socket } from 'node:net';
import os from 'node:os';
import { resetSocket } from '../net-util.js';
import type { Heads, JoinedPair, OnPairClosed, PairResult } from './joined-pair.js';
import { errnoError, nativeEngine, nativeUnavailableReason, onNativePairEnd, PairEndFlag, type NativeBinding } from './native-engine.js';

interface OpenPair {
  readonly onClosed: (result: PairResult, flags: number) => void;
  /** What the JS sockets had read before the handoff; the engine counts from zero. */
  readonly baseA: number;
  readonly baseB: number;
}

const ECANCELED = os.constants.errno.ECANCELED;
const open = new Map<number, OpenPair>();

onNativePairEnd((_type, id, flags, errno, bytesFromA, bytesFromB) => {
  const pair = open.get(id);
  if (!pair) return;
  open.delete(id);
  const error = errno === 0 || errno === ECANCELED ? null : errnoError(errno, 'splice');
  pair.onClosed({ bytesFromA: pair.baseA + bytesFromA, bytesFromB: pair.baseB + bytesFromB, error }, flags);
});

function engine(): NativeBinding | null {
  return nativeEngine();
}

export function spliceAvailable(): boolean {
  return engine() !== null;
}

export function spliceUnavailableReason(): string | null {
  return nativeUnavailableReason();
}

/** Live pairs, pipes and held connections of the engine (for metrics and tests). */
export function spliceStats(): { pairs: number; pipes: number; conns: number } {
  return engine()?.stats() ?? { pairs: 0, pipes: 0, conns: 0 };
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
    resetSocket(a);
    resetSocket(b);
    queueMicrotask(() => onClosed({ bytesFromA: baseA, bytesFromB: baseB, error: err instanceof Error ? err : new Error(String(err)) }));
    return { plane: 'splice', bytesFromA: () => baseA, bytesFromB: () => baseB, destroy: () => {} };
  }
  a.destroy();
  b.destroy();
  return track(native, id, onClosed, baseA, baseB);
}

/** Joins two connections the engine accepted and holds (native listeners): nothing to hand
 *  over, no descriptor to duplicate. */
export function joinHeldInEngine(connA: number, connB: number, heads: Heads, onClosed: OnPairClosed): JoinedPair {
  const native = engine();
  if (!native) throw new Error('the native engine is not loaded, yet it holds connections');
  const id = native.joinConns(connA, connB, heads.toA ?? null, heads.toB ?? null);
  return track(native, id, onClosed, 0, 0);
}

/** Connects to a service (an IP address) and joins it (side b) with a held connection (side a)
 *  at once; reachedService is false when the pair ended before the service answered. */
export function connectJoinInEngine(
  connA: number,
  service: { readonly ip: string; readonly port: number; readonly keepAliveSec: number },
  headToService: Buffer | undefined,
  onClosed: (result: PairResult, reachedService: boolean) => void,
): JoinedPair {
  const native = engine();
  if (!native) throw new Error('the native engine is not loaded, yet it holds connections');
  const id = native.connectJoin(connA, service.ip, service.port, headToService ?? null, service.keepAliveSec);
  return track(native, id, (result, flags) => onClosed(result, (flags & PairEndFlag.endedBeforeConnect) === 0), 0, 0);
}

/** A pair the engine made by itself (a dialed connection forwarded on its start header, a
 *  client paired with a lent connection). Whoever takes charge of it later says where its end
 *  goes (onClosed, with the PairEndFlag bits); an end that comes first waits for that. */
export function adoptEnginePair(id: number): { pair: JoinedPair; onClosed(handler: (result: PairResult, flags: number) => void): void } {
  const native = engine();
  if (!native) throw new Error('the native engine is not loaded, yet it made a pair');
  let ended: [PairResult, number] | null = null;
  let handler: ((result: PairResult, flags: number) => void) | null = null;
  const pair = track(native, id, (result, flags) => {
    ended = [result, flags];
    if (handler) handler(...ended);
  }, 0, 0);
  return {
    pair,
    onClosed: (h) => {
      handler = h;
      if (ended) h(...ended);
    },
  };
}

function track(native: NativeBinding, id: number, onClosed: OpenPair['onClosed'], baseA: number, baseB: number): JoinedPair {
  open.set(id, { onClosed, baseA, baseB });
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
