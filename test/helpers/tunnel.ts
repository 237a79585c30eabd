// Builds a whole tunnel in one process on 127.0.0.1 with OS-chosen ports: a local service, a
// white server and a gray agent. Used by integration tests that need the engine but not the CLI.
import { randomBytes } from 'node:crypto';
import net, { type AddressInfo, type Server } from 'node:net';
import type { GrayConfig, WhiteConfig } from '../../src/config/types.js';
import { GrayAgent } from '../../src/engine/gray/agent.js';
import type { DataPlane } from '../../src/engine/substrate/data-plane.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import type { Limits } from '../../src/limits.js';
import { grayConfigInCode, whiteConfigInCode, type GrayEntryInCode } from '../../src/config/in-code.js';
import { silentLogger, type Logger } from '../../src/log.js';
import { testDataPlane } from './data-plane.js';

export type ServiceHandler = (socket: net.Socket) => void;

/** Echoes everything and ends when the client ends (half-close aware). */
export const echoHandler: ServiceHandler = (socket) => {
  socket.on('error', () => socket.destroy());
  socket.pipe(socket);
};

export async function startService(handler: ServiceHandler = echoHandler): Promise<{ server: Server; port: number }> {
  const server = net.createServer({ allowHalfOpen: true }, handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

export function whiteConfigFor(grays: readonly GrayEntryInCode[], limits: Partial<Limits> = {}, extra: Partial<WhiteConfig> = {}): WhiteConfig {
  return whiteConfigInCode(grays, limits, { log: { level: 'silent' }, watch: { polling: false, debounceMs: 50 }, ...extra });
}

/** Tests reconnect fast: short backoff unless a test says otherwise. */
export function grayConfigFor(id: string, secret: Buffer, controlPort: number, targetPort: number, extra: Parameters<typeof grayConfigInCode>[4] = {}, limits: Partial<Limits> = {}): GrayConfig {
  return grayConfigInCode(id, secret, controlPort, targetPort, { log: { level: 'silent' }, ...extra }, { reconnectBaseMs: 50, reconnectMaxMs: 500, ...limits });
}

export interface Tunnel {
  readonly white: WhiteServer;
  readonly gray: GrayAgent;
  readonly secret: Buffer;
  readonly publicPort: number;
  readonly dataPort: number;
  readonly servicePort: number;
  stop(): Promise<void>;
}

export async function startTunnel(
  options: {
    handler?: ServiceHandler;
    pool?: number;
    whiteLimits?: Partial<Limits>;
    gray?: Parameters<typeof grayConfigInCode>[4];
    white?: Partial<WhiteConfig>;
    /** More settings of the gray's entry in the white's config. */
    entry?: Partial<GrayEntryInCode>;
    whiteLogger?: Logger;
    dataPlane?: DataPlane;
    targetHost?: string;
  } = {},
): Promise<Tunnel> {
  const service = await startService(options.handler);
  const secret = randomBytes(32);
  const dataPlane = options.dataPlane ?? testDataPlane();
  const white = new WhiteServer(whiteConfigFor([{ id: 'g1', secret, publicPort: 0, dataPort: 0, ...options.entry }], options.whiteLimits, options.white), {
    dataPlane,
    logger: options.whiteLogger ?? silentLogger(),
  });
  await white.start();
  const gray = new GrayAgent(grayConfigFor('g1', secret, white.controlPort, service.port, {
      pool: options.pool ?? 4,
      ...(options.targetHost ? { target: { host: options.targetHost, port: service.port } } : {}),
      ...options.gray,
    }),
    silentLogger(),
    { dataPlane },
  );
  const ready = new Promise<void>((resolve) => gray.once('pool-ready', () => resolve()));
  gray.start();
  await ready;
  const ports = white.portsOf('g1')!;
  return {
    white,
    gray,
    secret,
    publicPort: ports.publicPort,
    dataPort: ports.dataPort,
    servicePort: service.port,
    async stop() {
      await gray.stop(200);
      await white.stop(200);
      service.server.close();
    },
  };
}

/** Connects, sends `payload`, half-closes, and resolves with everything received until EOF. */
export function roundTrip(port: number, payload: Buffer, host = '127.0.0.1'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ host, port, allowHalfOpen: true }, () => {
      socket.end(payload);
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      socket.end();
      resolve(Buffer.concat(chunks));
    });
    socket.on('error', reject);
  });
}

/** Resolves when the socket is closed by the peer (with whatever it received). */
export function closedBy(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => {});
    socket.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

/** How the far end of `socket` ended: 'reset' (ECONNRESET), 'end' (a FIN: a clean end), or
 *  another error's code. Reads (and drops) what arrives. The socket must be allowHalfOpen: on
 *  'end' (unless it ended its own side first) an empty write asks the kernel whether it was a FIN or a reset, because libuv reports a
 *  reset that arrives together with data as an end (a hang-up after a short read counts as EOF). */
export function ending(socket: net.Socket): Promise<string> {
  socket.on('data', () => {});
  const named = (err: NodeJS.ErrnoException): string => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? 'reset' : `error ${err.code}`);
  return new Promise((resolve) => {
    socket.once('end', () => {
      // After our own end() nothing can be written: the end stands as seen.
      if (socket.writableEnded) return resolve('end');
      socket.write(Buffer.alloc(0), (err) => resolve(err ? named(err) : 'end'));
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(named(err)));
  });
}
