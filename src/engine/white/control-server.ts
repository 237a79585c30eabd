// The white's one TLS control port, shared by all grays. Per connection: admission (before any
// TLS work), a TLS 1.3 handshake under a deadline, then the mutual proof exchange under a second
// deadline, white first:
//   gray → HELLO{id}   white → WHITE_PROOF   gray → GRAY_PROOF   white → WELCOME | BYE(auth failed)
// Proofs are HMACs keyed from the gray's secret and this TLS session's exported keying material,
// so a man in the middle (two TLS sessions, two different EKMs) can neither relay nor forge them.
// An unknown id is answered exactly like a known one, with a proof under a per-process dummy key.
import { randomBytes } from 'node:crypto';
import net, { type Server, type Socket } from 'node:net';
import tls, { type SecureContext, type TLSSocket } from 'node:tls';
import { ErrorCodes, RelayError } from '../../errors.js';
import type { GrayEntry } from '../../config/types.js';
import type { Limits } from '../../limits.js';
import type { Logger } from '../../log.js';
import { ControlChannel } from '../control-channel.js';
import { listenOn, stopListening } from '../listen.js';
import { tlsSessionBinding } from '../tls-binding.js';
import { normalizeIp } from '../net-util.js';
import { decodeProof, deriveSessionKeys, encodeProof, proofsEqual, type SessionKeys } from '../protocol/auth.js';
import { MessageType, type Message } from '../protocol/messages.js';
import type { RateLimitedLog } from '../../rate-limited-log.js';
import type { Admission } from './admission.js';
import type { Gate } from './pool-broker.js';

export interface AuthenticatedGray {
  readonly entry: GrayEntry;
  readonly channel: ControlChannel;
  readonly remoteIp: string;
  readonly keys: SessionKeys;
  readonly requestedPool: number;
  /** The gray's data connections can carry one client after another (HELLO's reuse). */
  readonly offersReuse: boolean;
}

export interface ControlServerDeps {
  readonly secureContext: SecureContext;
  readonly limits: Readonly<Limits>;
  readonly admission: Admission;
  readonly logger: Logger;
  readonly warnings: RateLimitedLog;
  /** The current config's entry for an id (the registry can change under us via reload). */
  readonly lookup: (id: string) => GrayEntry | undefined;
  /** Optional authorize hook for gray logins, called after the proofs check out. */
  readonly gate: Gate | null;
  readonly onAuthenticated: (gray: AuthenticatedGray) => void;
  readonly onAuthFailed: (id: string, remoteIp: string) => void;
  readonly countRejection: (reason: string) => void;
}

export class ControlServer {
  private server: Server;
  /** Answers unknown ids with a proof that looks like any other. */
  private readonly dummySecret = randomBytes(32);
  private readonly pending = new Set<Socket>();

  constructor(private readonly deps: ControlServerDeps) {
    this.server = net.createServer((socket) => this.onConnection(socket));
  }

  listen(host: string, port: number): Promise<void> {
    return listenOn(this.server, host, port, 'control');
  }

  /**
   * Moves the listener to a new address (a reload changed control.listen). The new one is bound
   * before the old one closes, so the port is never without a listener; when the new address
   * needs the old one's port (the same port on another host, or a wildcard), the old one is
   * closed first and taken back if the new bind fails. Authenticated sessions are not touched.
   * Throws RELAY_ERR_LISTEN when the new address cannot be had; the old one then stays.
   */
  async rebind(host: string, port: number): Promise<void> {
    const old = this.server;
    const oldAddress = old.address();
    const next = net.createServer((socket) => this.onConnection(socket));
    try {
      await listenOn(next, host, port, 'control');
    } catch (err) {
      if (!(oldAddress && typeof oldAddress === 'object' && oldAddress.port === port)) throw err;
      stopListening(old);
      try {
        await listenOn(next, host, port, 'control');
      } catch (again) {
        await listenOn(old, oldAddress.address, oldAddress.port, 'control').catch(() => {});
        throw again;
      }
    }
    this.server = next;
    stopListening(old);
  }

  get port(): number {
    const a = this.server.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  /** Stop accepting and drop connections that have not authenticated yet. */
  close(): void {
    for (const s of this.pending) s.destroy();
    stopListening(this.server);
  }

  private onConnection(raw: Socket): void {
    const ip = normalizeIp(raw.remoteAddress);
    raw.on('error', () => raw.destroy());
    const refusal = this.deps.admission.admit(ip);
    if (refusal) {
      this.deps.countRejection(refusal);
      this.deps.warnings.warn(`control:${refusal}`, { code: ErrorCodes.TOO_MANY_UNAUTHENTICATED, remote: ip, reason: refusal }, 'control connection refused');
      raw.destroy();
      return;
    }
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.pending.delete(raw);
      this.deps.admission.release(ip);
    };
    this.pending.add(raw);
    raw.once('close', release);
    raw.setNoDelay(true);
    raw.setKeepAlive(true, this.deps.limits.keepAliveDelayMs);

    const tlsSocket = new tls.TLSSocket(raw, { isServer: true, secureContext: this.deps.secureContext });
    const handshakeTimer = setTimeout(() => {
      this.deps.countRejection('handshake_timeout');
      this.deps.warnings.warn('control:handshake_timeout', { code: ErrorCodes.HANDSHAKE_TIMEOUT, remote: ip }, `TLS handshake not done within ${this.deps.limits.handshakeTimeoutMs} ms`);
      tlsSocket.destroy();
    }, this.deps.limits.handshakeTimeoutMs);
    // A peer that hangs up mid-handshake without a TLS error (FIN before its Finished) emits
    // neither 'error' nor 'secure': without this the deadline stayed armed, later counted and
    // logged a handshake timeout that never happened, and kept the socket referenced until then.
    raw.once('close', () => clearTimeout(handshakeTimer));
    let secured = false;
    tlsSocket.on('error', (err: Error) => {
      clearTimeout(handshakeTimer);
      if (!secured) {
        this.deps.countRejection('tls_error');
        this.deps.warnings.warn('control:tls_error', { code: ErrorCodes.TLS_VERSION, remote: ip, detail: err.message }, 'TLS handshake failed');
      }
      tlsSocket.destroy();
    });
    tlsSocket.once('secure', () => {
      secured = true;
      clearTimeout(handshakeTimer);
      this.authenticate(tlsSocket, ip, release);
    });
  }

  private authenticate(socket: TLSSocket, ip: string, release: () => void): void {
    const { limits } = this.deps;
    const channel = new ControlChannel(socket, { maxPayloadBytes: limits.frameMaxBytesBeforeAuth });
    const authTimer = setTimeout(
      () => channel.close(new RelayError(ErrorCodes.AUTH_TIMEOUT, `not authenticated within ${limits.authTimeoutMs} ms`)),
      limits.authTimeoutMs,
    );
    let state: 'hello' | 'proof' | 'gate' | 'done' = 'hello';
    let hello: { id: string; pool: number; reuse: boolean } | null = null;
    let entry: GrayEntry | undefined;
    let keys: SessionKeys | null = null;

    const finish = (): void => {
      clearTimeout(authTimer);
      channel.off('message', onMessage);
    };
    channel.once('closed', (reason) => {
      finish();
      if (state === 'proof' && hello) {
        // The gray hung up after seeing our proof: its secret differs from ours (or a man in the
        // middle sits between us, so the proofs cannot match). Either way a failed login.
        this.failLogin(hello.id, ip);
        return;
      }
      if (state !== 'done') {
        this.deps.countRejection(reason.code);
        this.deps.logger.debug({ remote: ip, code: reason.code, detail: reason.message }, 'control connection ended before auth');
      }
    });

    const onMessage = (message: Message): void => {
      if (state === 'hello' && message.type === MessageType.HELLO) {
        const penaltyMs = this.deps.admission.penaltyLeft(ip, message.id);
        if (penaltyMs > 0) {
          // Refused before any proof: this id failed from this address moments ago.
          state = 'done';
          finish();
          this.deps.countRejection('penalty');
          channel.close(new RelayError(ErrorCodes.AUTH_FAILED, `recent failed logins as ${message.id} from ${ip}: refused for ${penaltyMs} ms more`));
          return;
        }
        hello = { id: message.id, pool: message.pool, reuse: message.reuse === 1 };
        entry = this.deps.lookup(message.id);
        const ekm = tlsSessionBinding(socket);
        keys = deriveSessionKeys(entry?.secret ?? this.dummySecret, ekm, message.id);
        channel.send({ type: MessageType.WHITE_PROOF, proof: encodeProof(keys.whiteProof) });
        state = 'proof';
        return;
      }
      if (state === 'proof' && message.type === MessageType.GRAY_PROOF && hello && keys) {
        const valid = entry !== undefined && proofsEqual(keys.grayProof, decodeProof(message.proof));
        if (!valid) {
          state = 'done';
          finish();
          this.failLogin(hello.id, ip);
          channel.close(new RelayError(ErrorCodes.AUTH_FAILED, 'authentication failed'));
          return;
        }
        const authed: AuthenticatedGray = { entry: entry!, channel, remoteIp: ip, keys, requestedPool: hello.pool, offersReuse: hello.reuse };
        const decision = this.deps.gate?.(hello.id, ip);
        if (decision) {
          state = 'gate';
          decision.then(
            (d) => (d.allow ? this.accept(authed, release, finish, () => (state = 'done')) : channel.close(new RelayError(ErrorCodes.HOOK_DENIED, `login denied: ${d.reason}`))),
            (err: unknown) => channel.close(new RelayError(ErrorCodes.HOOK_DENIED, `login denied: ${String(err)}`)),
          );
          return;
        }
        this.accept(authed, release, finish, () => (state = 'done'));
        return;
      }
      channel.close(new RelayError(ErrorCodes.MESSAGE_UNEXPECTED, `message type ${message.type} not expected in state ${state}`));
    };
    channel.on('message', onMessage);
  }

  private failLogin(id: string, ip: string): void {
    const penaltyMs = this.deps.admission.recordFailure(ip, id);
    this.deps.onAuthFailed(id, ip);
    this.deps.warnings.warn(
      `auth:${ip}:${id}`,
      { code: ErrorCodes.AUTH_FAILED, gray: id, remote: ip, penaltyMs, known: this.deps.lookup(id) !== undefined },
      'gray authentication failed',
    );
  }

  private accept(gray: AuthenticatedGray, release: () => void, finish: () => void, markDone: () => void): void {
    if (gray.channel.isClosed) return;
    markDone();
    finish();
    release();
    this.deps.admission.recordSuccess(gray.remoteIp, gray.entry.id);
    gray.channel.setMaxPayloadBytes(this.deps.limits.frameMaxBytesAfterAuth);
    this.deps.onAuthenticated(gray);
  }
}
