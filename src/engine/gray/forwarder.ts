// The JS plane's forward of an activated data connection (with an engine, the engine forwards:
// engine-link.ts): the white has written the start header, the client's bytes follow. Connect to the local service, optionally introduce the client with a PROXY protocol
// header, then join the two sockets. Until the service answers, the data socket is paused so a
// fast client cannot fill our memory. The returned Forward is the agent's handle for draining.
import net, { type Socket } from 'node:net';
import { formatHostPort } from '../../config/address.js';
import type { GrayConfig, GrayService, HostPort } from '../../config/types.js';
import { ErrorCodes } from '../../errors.js';
import type { Logger } from '../../log.js';
import { join } from '../substrate/js-plane.js';
import type { Pair, PairEnd } from '../substrate/pair.js';
import { resetSocket } from '../net-util.js';
import { proxyHeaderFor } from '../protocol/proxy-protocol.js';
import type { ClientAddressInfo } from '../protocol/start-header.js';
import type { RateLimitedLog } from '../../rate-limited-log.js';
import { localPortsAdvice } from './local-ports.js';
import type { Forward } from './pool-link.js';

export function forwardToTarget(
  data: Socket,
  client: ClientAddressInfo,
  rest: Buffer,
  service: GrayService,
  config: GrayConfig,
  logger: Logger,
  warnings: RateLimitedLog,
  onClosed: (result: PairEnd | null) => void,
  serviceUnreachable: () => void = () => {},
): Forward {
  let joined: Pair | null = null;
  let markClosed = (): void => {};
  let finished = false;
  // What the data socket read before the client's bytes (the start header) is not the client's:
  // the pair counts the socket's bytesRead, so it is taken off here.
  const notForwarded = data.bytesRead - rest.length;
  const finish = (result: PairEnd | null): void => {
    if (finished) return;
    finished = true;
    onClosed(result && { ...result, bytesFromA: result.bytesFromA - notForwarded });
    markClosed();
  };
  const forward: Forward = {
    closed: new Promise<void>((resolve) => (markClosed = resolve)),
    destroy: () => {
      if (joined) return joined.destroy();
      // Still connecting to the service: a destroyed socket emits neither 'connect' nor
      // 'error', so this is the forward's end. The white resets its client in turn.
      resetSocket(data);
      target.destroy();
      finish(null);
    },
  };
  data.pause();
  if (rest.length > 0) data.unshift(rest);
  const target = net.connect({ host: service.target.host, port: service.target.port, allowHalfOpen: true });
  const clientAddress = formatHostPort({ host: client.srcAddress, port: client.srcPort });
  const onConnectError = (err: Error): void => {
    // The service refused or is gone: reset the data connection at once (the white resets its
    // client in turn), so the client hears a refusal, not an empty answer.
    serviceUnreachable();
    warnTargetFailed(warnings, service.target, client, err);
    resetSocket(data);
    target.destroy();
    finish(null);
  };
  target.once('error', onConnectError);
  target.once('connect', () => {
    target.off('error', onConnectError);
    if (data.destroyed) {
      // The client (or the white) went away while the service was answering.
      resetSocket(target);
      return finish(null);
    }
    // Local: no-delay only; the config's keepalive is the pooled connections' (engine-link.ts).
    target.setNoDelay(true);
    const proxyHeader = proxyHeaderFor(service.proxyProtocol, client);
    logger.debug({ client: clientAddress, service: service.name }, 'forwarding');
    joined = join(data, target, { toB: proxyHeader }, finish);
  });
  return forward;
}

/** Logs (rate limited) why a client could not be forwarded to the service: the service did not
 *  answer, or this process is out of file descriptors or of local ports toward it (local-ports.ts),
 *  which say nothing about the service. */
export function warnTargetFailed(warnings: RateLimitedLog, target: HostPort | null, client: ClientAddressInfo | null, error: Error): void {
  const code = (error as NodeJS.ErrnoException).code;
  const fields = { ...(target ? { target: formatHostPort(target) } : {}), ...(client ? { client: formatHostPort({ host: client.srcAddress, port: client.srcPort }) } : {}), detail: error.message };
  if (code === 'EMFILE' || code === 'ENFILE') {
    warnings.warn(
      'target:fds',
      { ...fields, code: ErrorCodes.TOO_MANY_OPEN_FILES },
      `out of file descriptors (${code}): cannot open a connection to the local service; raise the open-file limit (ulimit -n) or lower the pool`,
    );
    return;
  }
  if (code === 'EADDRNOTAVAIL' && target) {
    const { detail, portRange, twReuse } = localPortsAdvice('service', formatHostPort(target));
    warnings.warn('target:ports', { ...fields, code: ErrorCodes.LOCAL_PORTS_EXHAUSTED, detail, portRange, twReuse }, 'no local port left for connections to the service');
    return;
  }
  warnings.warn('target', { ...fields, code: ErrorCodes.TARGET_UNREACHABLE }, 'local service unreachable');
}
