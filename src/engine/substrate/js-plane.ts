// The JavaScript data plane: bytes flow through stream.pipe (which applies backpressure: a
// slow reader pauses the fast writer instead of growing memory), a FIN from either side is
// passed on as a FIN (half-close: both sockets are created with allowHalfOpen), and the pair is
// torn down exactly once, by one function, on the first error or close. The JS plane's pairs,
// where there is no engine (see data-plane.ts).
import type { Socket } from 'node:net';
import type { Heads, Pair, OnPairEnd } from './pair.js';

export function join(a: Socket, b: Socket, heads: Heads, onClosed: OnPairEnd): Pair {
  let firstError: Error | null = null;
  let closedCount = 0;

  const fail = (err: Error): void => {
    // A broken socket cannot deliver anything more: tear the whole pair down now.
    if (!firstError) firstError = err;
    a.destroy();
    b.destroy();
  };
  const onClose = (other: Socket) => (): void => {
    // A clean close means this socket read EOF (so `other` was ended by pipe) and flushed its
    // writes (so `other` had already delivered EOF to us). `other` is then finishing on its own
    // and must not be destroyed: it may still be flushing the last bytes to its peer. Any other
    // close (destroy, reset) ends the pair.
    if (!(other.readableEnded && other.writableEnded)) other.destroy();
    closedCount += 1;
    if (closedCount === 2) onClosed({ bytesFromA: a.bytesRead, bytesFromB: b.bytesRead, error: firstError });
  };

  a.on('error', fail);
  b.on('error', fail);
  a.once('close', onClose(b));
  b.once('close', onClose(a));
  if (heads.toA) a.write(heads.toA);
  if (heads.toB) b.write(heads.toB);
  a.pipe(b);
  b.pipe(a);
  return {
    plane: 'js',
    bytesFromA: () => a.bytesRead,
    bytesFromB: () => b.bytesRead,
    destroy: () => {
      a.destroy();
      b.destroy();
    },
  };
}
