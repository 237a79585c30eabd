// The gray agent: dials the white's control port over TLS 1.3, checks the white's proof before
// revealing its own (a man in the middle learns nothing), receives its data port and credits,
// keeps the pool full, forwards each activated connection to the local service, and reconnects
// with capped, jittered exponential backoff whenever the control session ends — forever, until
// stopped. A white restart (new certificate) needs nothing from the operator: the certificate is
// not what authenticates the white; the proof bound to the TLS session is.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import type { GrayConfig } from '../../config/types.js';
import { ErrorCodes, RelayError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { Backoff } from '../backoff.js';
import { ControlChannel } from '../control-channel.js';
import { tlsSessionBinding } from '../tls-binding.js';
import { formatHostPort } from '../../config/address.js';
import { decodeProof, deriveSessionKeys, encodeProof, proofsEqual, type SessionKeys } from '../protocol/auth.js';
import { MessageType, type Message } from '../protocol/messages.js';
import { sessionIdFromString } from '../protocol/preamble.js';
import { RateLimitedLog } from '../../rate-limited-log.js';
import { VERSION } from '../../version.js';
import { resolveDataPlane } from '../data-plane/join.js';
import { engineTakesAddress } from '../data-plane/native-engine.js';
import { engineLinks } from './engine-link.js';
import { PoolDialer, type PoolLinks } from './pool-dialer.js';
import type { Forward, LinkContext } from './pool-link.js';
import { socketLinks } from './socket-link.js';
import type { GrayStatus, GrayStatusSource } from './status.js';

const AGENT = `relay/${VERSION}`;

/** Who opens the pool's data connections: the native engine, or Node sockets. */
export type DialerKind = 'native' | 'node';

/** The dialer a gray uses when nothing asks for a particular one: the engine needs the splice
 *  plane and a service given as an IP address (it does not resolve names). */
export function defaultDialer(config: GrayConfig): DialerKind {
  return resolveDataPlane().plane === 'splice' && engineTakesAddress(config.target.host) ? 'native' : 'node';
}

export interface GrayAgentOptions {
  readonly dialer?: DialerKind;
}

export interface GrayAgentEvents {
  connected: [{ sessionId: string; dataPort: number; fingerprint: string }];
  disconnected: [RelayError];
  'pool-ready': [number];
}

export class GrayAgent extends EventEmitter<GrayAgentEvents> implements GrayStatusSource {
  private readonly backoff: Backoff;
  private readonly counts = { sessions: 0, reconnects: 0, poolTarget: 0, forwardsTotal: 0, bytesToService: 0, bytesFromService: 0, serviceConnectFailures: 0 };
  private readonly warnings: RateLimitedLog;
  private channel: ControlChannel | null = null;
  private dialer: PoolDialer | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  private readonly active = new Set<Forward>();
  readonly dialerKind: DialerKind;

  constructor(
    private readonly config: GrayConfig,
    private readonly logger: Logger,
    options: GrayAgentOptions = {},
  ) {
    super();
    this.dialerKind = options.dialer ?? defaultDialer(config);
    this.backoff = new Backoff(config.limits.reconnectBaseMs, config.limits.reconnectMaxMs);
    this.warnings = new RateLimitedLog(logger);
  }

  get activeForwards(): number {
    return this.active.size;
  }

  status(): GrayStatus {
    const c = this.counts;
    const connected = this.dialer !== null;
    return {
      id: this.config.id,
      whites: [{ white: formatHostPort(this.config.white), connected, sessions: c.sessions, reconnects: c.reconnects, poolIdle: this.dialer?.idleCount ?? 0, poolTarget: connected ? c.poolTarget : 0 }],
      activeForwards: this.active.size,
      forwardsTotal: c.forwardsTotal,
      bytesToService: c.bytesToService,
      bytesFromService: c.bytesFromService,
      serviceConnectFailures: c.serviceConnectFailures,
    };
  }

  start(): void {
    this.connect();
  }

  /** Stop reconnecting, end the session and the idle pool, let active forwards finish up to drainMs. */
  async stop(drainMs = this.config.limits.drainTimeoutMs): Promise<void> {
    this.stopping = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.dialer?.stop();
    this.channel?.close(new RelayError(ErrorCodes.SHUTDOWN, 'gray is shutting down'));
    if (this.active.size > 0) {
      this.logger.info({ active: this.active.size, drainMs }, 'draining active connections');
      const deadline = Date.now() + drainMs;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all([...this.active].map((f) => f.closed)),
        new Promise((r) => (timer = setTimeout(r, Math.max(1, deadline - Date.now())))),
      ]);
      clearTimeout(timer);
      for (const f of this.active) f.destroy();
    }
  }

  private connect(): void {
    if (this.stopping) return;
    const { white, limits, id, secret } = this.config;
    const where = formatHostPort(white);
    const socket = tls.connect({
      host: white.host,
      port: white.port,
      minVersion: 'TLSv1.3',
      // The certificate is self-signed and new at every white start; the white is authenticated
      // by its proof over this session's keying material instead (checked below).
      rejectUnauthorized: false,
      ...(net.isIP(white.host) !== 0 ? {} : { servername: white.host }),
    });
    const handshakeTimer = setTimeout(() => socket.destroy(new RelayError(ErrorCodes.HANDSHAKE_TIMEOUT, `TLS handshake with ${where} not done within ${limits.handshakeTimeoutMs} ms`)), limits.handshakeTimeoutMs);
    socket.once('error', (err) => {
      clearTimeout(handshakeTimer);
      if (!this.channel || this.channel.socket !== socket) this.scheduleReconnect(err.message);
    });
    socket.once('secureConnect', () => {
      clearTimeout(handshakeTimer);
      const fingerprint = socket.getPeerCertificate().fingerprint256 ?? '';
      const channel = new ControlChannel(socket, { maxPayloadBytes: limits.frameMaxBytesBeforeAuth });
      this.channel = channel;
      this.handshake(channel, socket, fingerprint, id, secret);
      channel.once('closed', (reason) => this.onClosed(channel, reason));
    });
  }

  private handshake(channel: ControlChannel, socket: tls.TLSSocket, fingerprint: string, id: string, secret: Buffer): void {
    const { limits } = this.config;
    let keys: SessionKeys | null = null;
    let state: 'white-proof' | 'welcome' | 'ready' = 'white-proof';
    const authTimer = setTimeout(() => channel.close(new RelayError(ErrorCodes.AUTH_TIMEOUT, `not authenticated within ${limits.authTimeoutMs} ms`)), limits.authTimeoutMs);
    channel.once('closed', () => clearTimeout(authTimer));

    const onMessage = (message: Message): void => {
      if (state === 'white-proof' && message.type === MessageType.WHITE_PROOF) {
        keys = deriveSessionKeys(secret, tlsSessionBinding(socket), id);
        if (!proofsEqual(keys.whiteProof, decodeProof(message.proof))) {
          // Wrong secret on the white's side, or someone in the middle: never send our proof.
          channel.close(new RelayError(ErrorCodes.WHITE_PROOF_INVALID, `the white at ${formatHostPort(this.config.white)} did not prove it knows the secret (wrong secret, or a man in the middle; certificate ${fingerprint})`));
          return;
        }
        channel.send({ type: MessageType.GRAY_PROOF, proof: encodeProof(keys.grayProof) });
        state = 'welcome';
        return;
      }
      if (state === 'welcome' && message.type === MessageType.WELCOME && keys) {
        clearTimeout(authTimer);
        state = 'ready';
        channel.setMaxPayloadBytes(limits.frameMaxBytesAfterAuth);
        channel.startHeartbeat(message.heartbeatMs, limits.heartbeatMissed);
        this.backoff.reset();
        this.counts.sessions += 1;
        this.counts.poolTarget = message.pool;
        this.startPool(message.session, this.openLinks(message.dataPort, socket.remoteAddress), message.pool, message.credits, keys.dataKey);
        this.logger.info({ gray: id, white: formatHostPort(this.config.white), fingerprint, dataPort: message.dataPort, pool: message.pool }, 'gray connected');
        this.emit('connected', { sessionId: message.session, dataPort: message.dataPort, fingerprint });
        return;
      }
      if (state === 'ready' && message.type === MessageType.GRANT) {
        this.dialer?.grant(message.upTo);
        return;
      }
      channel.close(new RelayError(ErrorCodes.MESSAGE_UNEXPECTED, `message type ${message.type} not expected in state ${state}`));
    };
    channel.on('message', onMessage);
    channel.send({ type: MessageType.HELLO, id, pool: this.config.pool, agent: AGENT });
  }

  /** How this session's data connections are opened. The engine dials IP addresses only: a data
   *  host that is the white's own host name is dialed at the address the control channel
   *  reached (the same white); another host name goes through Node sockets. */
  private openLinks(dataPort: number, controlPeer: string | undefined): PoolLinks {
    const { dataHost, white } = this.config;
    const ctx: LinkContext = { config: this.config, logger: this.logger, warnings: this.warnings, port: dataPort, serviceUnreachable: () => void (this.counts.serviceConnectFailures += 1) };
    const dataIp = net.isIP(dataHost) !== 0 ? dataHost : dataHost === white.host ? controlPeer : undefined;
    if (this.dialerKind === 'native' && dataIp && engineTakesAddress(dataIp)) return { open: engineLinks(ctx, dataIp), where: formatHostPort({ host: dataIp, port: dataPort }) };
    return { open: socketLinks(ctx, dataHost), where: formatHostPort({ host: dataHost, port: dataPort }) };
  }

  private startPool(session: string, links: PoolLinks, poolTarget: number, credits: number, dataKey: Buffer): void {
    this.dialer?.stop();
    const dialer = new PoolDialer({
      ...links,
      sessionId: sessionIdFromString(session),
      dataKey,
      poolTarget,
      config: this.config,
      logger: this.logger,
      onPoolReady: (idle) => {
        this.logger.info({ gray: this.config.id, idle }, 'pool ready');
        this.emit('pool-ready', idle);
      },
      onActivated: (link, client) => {
        const forward = link.forward(client, (result) => {
          this.active.delete(forward);
          this.counts.forwardsTotal += 1;
          // The data connection is side a: what it read came from the client, through the white.
          if (result) {
            this.counts.bytesToService += result.bytesFromA;
            this.counts.bytesFromService += result.bytesFromB;
          }
        });
        this.active.add(forward);
      },
    });
    this.dialer = dialer;
    dialer.grant(credits);
  }

  private onClosed(channel: ControlChannel, reason: RelayError): void {
    if (this.channel !== channel) return;
    this.channel = null;
    this.dialer?.stop();
    this.dialer = null;
    this.emit('disconnected', reason);
    if (this.stopping) return;
    const level = reason.code === ErrorCodes.AUTH_FAILED || reason.code === ErrorCodes.WHITE_PROOF_INVALID ? 'error' : 'warn';
    this.logger[level]({ gray: this.config.id, code: reason.code, reason: reason.message }, 'control session ended');
    this.scheduleReconnect(reason.message);
  }

  private scheduleReconnect(why: string): void {
    if (this.stopping || this.reconnectTimer) return;
    const delayMs = this.backoff.next();
    this.counts.reconnects += 1;
    this.logger.info({ gray: this.config.id, white: formatHostPort(this.config.white), retryInMs: delayMs, attempt: this.backoff.attempts, why }, 'reconnecting');
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delayMs);
  }
}
