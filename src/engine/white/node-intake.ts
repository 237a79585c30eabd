// A gray's ports on Node's listeners: the JS plane's intake. Every data socket is unverified until its 60-byte preamble arrives in time;
// with data_source_check on, sockets from any address but the control connection's are refused
// before a byte is read, so strangers cannot fill the unverified slots. Each service has its own
// public port; a client outside its allow-list is closed before a byte is read (pauseOnConnect).
import net, { type Server, type Socket } from 'node:net';
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import type { WhiteService } from '../../config/types.js';
import { allowed } from '../protocol/cidr.js';
import { tuneDataSocket } from '../substrate/data-plane.js';
import { SocketConn } from '../substrate/socket-conn.js';
import { listenOn, stopListening } from '../listen.js';
import { normalizeIp } from '../net-util.js';
import { PREAMBLE_BYTES, PreambleReader } from '../protocol/preamble.js';
import type { GrayEndpoint } from './gray-endpoint.js';
import type { IntakePorts, IntakeSettings, PortIntake } from './port-intake.js';

interface PublicPort {
  readonly server: Server;
  /** The service it was opened for; its allow-list is read at each accept. */
  service: WhiteService;
}

export class NodeIntake implements PortIntake {
  private readonly publics = new Map<string, PublicPort>();
  private readonly dataServer: Server;
  private unverified = 0;
  private listening = false;

  constructor(
    private readonly s: IntakeSettings,
    private readonly endpoint: GrayEndpoint,
  ) {
    this.dataServer = net.createServer({ allowHalfOpen: true }, (s) => this.onDataConnection(s));
  }

  async listen(): Promise<void> {
    const o = this.s;
    await listenOn(this.dataServer, o.bind, o.dataPort, `data_port of ${o.grayId}`);
    try {
      for (const service of o.services) await this.openPublic(service);
    } catch (err) {
      this.close();
      throw err;
    }
    this.listening = true;
  }

  async servicesChanged(): Promise<void> {
    if (!this.listening) return;
    const wanted = new Map(this.s.services.map((x) => [x.name, x]));
    for (const [name, port] of this.publics) {
      const next = wanted.get(name);
      if (next && next.publicPort === port.service.publicPort) {
        port.service = next;
        continue;
      }
      stopListening(port.server);
      this.publics.delete(name);
    }
    let failure: unknown = null;
    for (const service of this.s.services) {
      if (this.publics.has(service.name)) continue;
      try {
        await this.openPublic(service);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure) throw failure;
  }

  private async openPublic(service: WhiteService): Promise<void> {
    // pauseOnConnect: a client's bytes stay in the kernel until it is paired, so a waiting
    // client costs no user-space buffer, and one refused by its allow-list had none read.
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => this.onClient(s, port));
    const port: PublicPort = { server, service };
    this.publics.set(service.name, port);
    try {
      await listenOn(server, this.s.bind, service.publicPort, `public_port of service ${service.name} of ${this.s.grayId}`);
    } catch (err) {
      this.publics.delete(service.name);
      throw err;
    }
  }

  get ports(): IntakePorts {
    const publicPorts: Record<string, number> = {};
    for (const service of this.s.services) {
      const port = this.publics.get(service.name);
      publicPorts[service.name] = port ? portOf(port.server, service.publicPort) : service.publicPort;
    }
    const first = this.s.services[0];
    return { publicPort: first ? (publicPorts[first.name] ?? 0) : 0, dataPort: portOf(this.dataServer, this.s.dataPort), publicPorts };
  }

  sessionChanged(): void {}

  close(): void {
    for (const port of this.publics.values()) stopListening(port.server);
    this.publics.clear();
    stopListening(this.dataServer);
  }

  private onClient(socket: Socket, port: PublicPort): void {
    socket.on('error', () => socket.destroy());
    const { service } = port;
    if (!allowed(service.allow, socket.remoteAddress)) {
      socket.destroy();
      return this.endpoint.refuseNotAllowed(service.name, socket.remoteAddress ?? '');
    }
    socket.setNoDelay(true);
    // libuv probes once a second, ten times, after the delay: the engine's listener does the same.
    if (this.s.clientKeepAliveMs > 0) socket.setKeepAlive(true, this.s.clientKeepAliveMs);
    this.endpoint.broker.onClient(new SocketConn(socket, false), service.name);
  }

  private onDataConnection(socket: Socket): void {
    const o = this.s;
    const endpoint = this.endpoint;
    socket.on('error', () => socket.destroy());
    const refuse = (code: ErrorCode, detail: string): void => endpoint.refuse(new SocketConn(socket, true), socket.remoteAddress, code, detail);
    // Refused before a byte is read: closed, as the engine's intake does (it has nothing to abort).
    const refuseAtAccept = (code: ErrorCode, detail: string): void => {
      socket.destroy();
      endpoint.refuse(null, socket.remoteAddress, code, detail);
    };
    if (o.dataSourceCheck) {
      const session = endpoint.broker.currentSession;
      if (!session) return refuseAtAccept(ErrorCodes.PREAMBLE_UNKNOWN_SESSION, `gray ${o.grayId} has no current session`);
      const source = normalizeIp(socket.remoteAddress);
      if (source !== session.remoteIp) {
        return refuseAtAccept(ErrorCodes.PREAMBLE_WRONG_SOURCE, `data connection from ${source}, control connection from ${session.remoteIp}`);
      }
    }
    if (this.unverified >= o.unverifiedLimit) {
      return refuseAtAccept(ErrorCodes.TOO_MANY_UNAUTHENTICATED, `${this.unverified} unverified data connections, limit ${o.unverifiedLimit}`);
    }
    this.unverified += 1;
    const reader = new PreambleReader();
    let settled = false;
    const settle = (): void => {
      if (settled) return;
      settled = true;
      this.unverified -= 1;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', settle);
    };
    const fail = (code: ErrorCode, detail: string): void => {
      settle();
      refuse(code, detail);
    };
    const timer = setTimeout(() => fail(ErrorCodes.PREAMBLE_TIMEOUT, `no complete preamble within ${o.preambleTimeoutMs} ms`), o.preambleTimeoutMs);
    const onData = (chunk: Buffer): void => {
      let preamble: Buffer | null;
      try {
        preamble = reader.push(chunk);
      } catch (err) {
        return fail(ErrorCodes.PREAMBLE_INVALID, err instanceof Error ? err.message : String(err));
      }
      if (!preamble) return;
      const verdict = endpoint.verify(socket.remoteAddress, preamble);
      if (!verdict.ok) return fail(verdict.code, verdict.detail);
      settle();
      tuneDataSocket(socket, o.keepAliveDelayMs);
      endpoint.broker.addIdle(new SocketConn(socket, true), verdict.session);
    };
    // The data port is allowHalfOpen, so a peer's FIN alone never closes the socket: without
    // this, a stranger could connect, send FIN and go away, and its slot among the unverified
    // stayed taken until the preamble deadline. A FIN before the preamble ends the attempt.
    const onEnd = (): void => fail(ErrorCodes.PREAMBLE_INVALID, `connection ended after ${reader.receivedBytes} of ${PREAMBLE_BYTES} preamble bytes`);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.on('close', settle);
  }
}

function portOf(server: Server, fallback: number): number {
  const address = server.address();
  return address && typeof address === 'object' ? address.port : fallback;
}
