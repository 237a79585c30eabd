// Binding and unbinding the white's listeners (control port, and each gray's port pair), with
// failures turned into RELAY_ERR_LISTEN naming what could not be bound.
import net, { type Server } from 'node:net';
import { formatHostPort } from '../config/address.js';
import { ErrorCodes, RelayError } from '../errors.js';

export function listenOn(server: Server, host: string, port: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(new RelayError(ErrorCodes.LISTEN, `cannot listen on ${formatHostPort({ host, port })} (${what}): ${err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Stop accepting. Not server.close's callback: that waits for every accepted connection to
 * end, and draining those is the caller's decision. The listening handle is closed at once.
 */
export function stopListening(server: Server): void {
  if (server.listening) server.close();
}


/** Whether host:port can be listened on right now (tried, then let go at once). */
export function canListen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}
