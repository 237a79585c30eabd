// The JavaScript data plane: bytes flow through stream.pipe (which applies backpressure: a
// slow reader pauses the fast writer instead of growing memory), a FIN from either side is
// passed on as a FIN (half-close: both sockets are created with allowHalfOpen), and the pair is
// torn down exactly once, by one function, on the first error or close. A teardown that is not
// two FINs (an error, destroy()) resets both sockets, so an abort reaches the far ends as an
// abort, never as a clean end after a partial transfer. The JS plane's pairs, where there is no
// engine (see data-plane.ts).
import type { Socket } from 'node:net';
import { resetSocket } from '../net-util.js';
import type { Heads, Pair, OnPairEnd } from './pair.js';

export function join(a: Socket, b: Socket, heads: Heads, onClosed: OnPairEnd): Pair {
  let firstError: Error | null = null;
  let closedCount = 0;

  const fail = (err: Error): void => {
    // A broken socket cannot deliver anything more: tear the whole pair down now.
    if (!firstError) firstError = err;
    resetSocket(a);
    resetSocket(b);
  };
  const onClose = (other: Socket) => (): void => {
    // A clean close means this socket read EOF (so `other` was ended by pipe) and flushed its
    // writes (so `other` had already delivered EOF to us). `other` is then finishing on its own
    // and must not be destroyed: it may still be flushing the last bytes to its peer. Any other
    // close (destroy, reset) ends the pair, with a reset.
    if (!(other.readableEnded && other.writableEnded)) resetSocket(other);
    closedCount += 1;
    if (closedCount === 2) onClosed({ bytesFromA: a.bytesRead, bytesFromB: b.bytesRead, error: firstError });
  };

  a.on('error', fail);
  b.on('error', fail);
  a.once('close', onClose(b));
  b.once('close', onClose(a));
  if (heads.toA) a.write(heads.toA);
  if (heads.toB) b.write(heads.toB);
  // The FIN is passed on by hand: libuv reports a reset that arrives together with data as an
  // end (a hang-up after a short read counts as EOF, and the read that would say ECONNRESET is
  // never made), and passing that on as a FIN is the silent truncation this plane must not do.
  // An empty write tells them apart: it fails on a reset socket, and succeeds on one that only
  // received a FIN (it is queued behind what is still to be written there, so it costs no order).
  const passEnd = (from: Socket, to: Socket) => (): void => {
    if (from.writableEnded || from.destroyed) return void to.end();
    from.write(Buffer.alloc(0), (err) => {
      if (err) fail(err);
      else to.end();
    });
  };
  // A socket whose FIN came before the join (a client that half-closed while it waited) has
  // already emitted 'end': pass that one on now.
  for (const [from, to] of [[a, b], [b, a]] as const) {
    if (from.readableEnded) process.nextTick(passEnd(from, to));
    else from.once('end', passEnd(from, to));
  }
  a.pipe(b, { end: false });
  b.pipe(a, { end: false });
  return {
    plane: 'js',
    bytesFromA: () => a.bytesRead,
    bytesFromB: () => b.bytesRead,
    destroy: () => {
      resetSocket(a);
      resetSocket(b);
    },
  };
}
