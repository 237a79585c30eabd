// Small address helpers shared by both sides.
import type { Socket } from 'node:net';

/** `::ffff:1.2.3.4` and `1.2.3.4` are the same peer; compare source addresses in this form. */
export function normalizeIp(address: string | undefined): string {
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** Ends a socket with a reset instead of a FIN: how relay passes an abort on, and how it refuses
 *  a connection it cannot serve, so the peer can tell either from a complete, empty answer.
 *  Anything still queued to send is discarded. A socket already destroyed is left alone. */
export function resetSocket(socket: Socket): void {
  if (socket.destroyed) return;
  // Without a handle (never connected, or already closed) there is nothing to reset;
  // resetAndDestroy would destroy it with an ERR_SOCKET_CLOSED error instead.
  if (!(socket as unknown as { _handle?: unknown })._handle) return void socket.destroy();
  socket.resetAndDestroy();
}
