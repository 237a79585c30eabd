// One TLS control connection, seen as a stream of validated messages. Used by both the white
// (per gray) and the gray. It owns: the preface and frame decoding (protocol/frames.ts), message
// validation (protocol/messages.ts), heartbeats and the dead-peer bound, and a single close path
// that reports why the channel ended. It knows nothing about the handshake's meaning.
import { EventEmitter } from 'node:events';
import type { TLSSocket } from 'node:tls';
import { ErrorCodes, RelayError } from '../errors.js';
import { encodePreface } from './protocol/constants.js';
import { FrameDecoder } from './protocol/frames.js';
import { sanitizeText } from './protocol/field-checks.js';
import { decodeMessage, encodeMessage, MESSAGE_LIMITS, MessageType, type Message } from './protocol/messages.js';

export interface ControlChannelEvents {
  message: [Message];
  closed: [RelayError];
}

export class ControlChannel extends EventEmitter<ControlChannelEvents> {
  private readonly decoder: FrameDecoder;
  private closedWith: RelayError | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private lastReceivedAt = Date.now();

  constructor(
    readonly socket: TLSSocket,
    options: { maxPayloadBytes: number },
  ) {
    super();
    this.decoder = new FrameDecoder({ maxPayloadBytes: options.maxPayloadBytes, expectPreface: true });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // Without a BYE: the peer process stopped or the network dropped the connection. Ordinary
    // for a white or a gray, not a bug.
    socket.on('error', (err) => this.close(new RelayError(ErrorCodes.CONNECTION_LOST, `control connection lost: ${err.message}`, { cause: err }), false));
    socket.on('close', () => this.close(new RelayError(ErrorCodes.CONNECTION_LOST, 'control connection closed by the peer without a word'), false));
    socket.write(encodePreface());
  }

  get remoteAddress(): string {
    return this.socket.remoteAddress ?? 'unknown';
  }

  get isClosed(): boolean {
    return this.closedWith !== null;
  }

  /** Raise the frame limit once the peer has authenticated. */
  setMaxPayloadBytes(n: number): void {
    this.decoder.setMaxPayloadBytes(n);
  }

  send(message: Message): void {
    if (this.closedWith || this.socket.destroyed) return;
    this.socket.write(encodeMessage(message));
  }

  /**
   * Send PING every interval; declare the peer dead when nothing at all arrived for `missed`
   * intervals. Any received frame counts as life, so a busy channel needs no extra traffic.
   */
  startHeartbeat(intervalMs: number, missed: number): void {
    this.stopHeartbeat();
    this.lastReceivedAt = Date.now();
    const deadAfterMs = intervalMs * missed;
    this.heartbeatTimer = setInterval(() => {
      const silentMs = Date.now() - this.lastReceivedAt;
      if (silentMs > deadAfterMs) {
        this.close(
          new RelayError(ErrorCodes.HEARTBEAT_TIMEOUT, `no traffic from peer for ${silentMs} ms (limit ${deadAfterMs} ms)`, {
            details: { silentMs, limitMs: deadAfterMs },
          }),
        );
        return;
      }
      this.send({ type: MessageType.PING, t: Date.now() });
    }, intervalMs);
    this.heartbeatTimer.unref();
  }

  /**
   * Close once. With `tellPeer`, a BYE carrying the code goes first so the peer can log why.
   * The socket is ended gracefully and destroyed shortly after in case the peer never answers.
   */
  close(reason: RelayError, tellPeer = true): void {
    if (this.closedWith) return;
    this.closedWith = reason;
    this.stopHeartbeat();
    if (tellPeer && !this.socket.destroyed && this.socket.writable) {
      // Messages can carry anything (newlines, peer-supplied text); the BYE field rules are strict
      // and encodeMessage throws on a violation, so clean it to the field's limits first.
      this.socket.write(encodeMessage({ type: MessageType.BYE, code: reason.code, reason: sanitizeText(reason.message, MESSAGE_LIMITS.byeReasonMaxBytes) }));
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else {
      this.socket.destroy();
    }
    this.emit('closed', reason);
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  private onData(chunk: Buffer): void {
    if (this.closedWith) return;
    this.lastReceivedAt = Date.now();
    let messages: Message[];
    try {
      messages = this.decoder.push(chunk).map(decodeMessage);
    } catch (err) {
      this.close(err instanceof RelayError ? err : new RelayError(ErrorCodes.FRAME_MALFORMED, String(err), { cause: err }));
      return;
    }
    for (const message of messages) {
      if (this.closedWith) return;
      if (message.type === MessageType.PING) {
        this.send({ type: MessageType.PONG, t: message.t });
        continue;
      }
      if (message.type === MessageType.PONG) continue;
      if (message.type === MessageType.BYE) {
        this.close(new RelayError(peerCode(message.code), `peer closed: ${message.code}: ${message.reason}`), false);
        return;
      }
      this.emit('message', message);
    }
    // A peer that sends PINGs faster than it reads our PONGs would make us queue replies without
    // bound (megabytes per second of flood). While our writes are backed up, stop reading it: its
    // frames wait in the kernel (TCP flow control) and, if it never reads, nothing arrives and the
    // heartbeat (or the auth deadline) ends the channel.
    if (this.socket.writableNeedDrain && !this.socket.isPaused()) {
      this.socket.pause();
      this.socket.once('drain', () => this.socket.resume());
    }
  }
}

/** Keep a peer's stable code when it is one of ours, so callers can match on it. */
function peerCode(code: string): RelayError['code'] {
  const known = Object.values(ErrorCodes) as string[];
  return (known.includes(code) ? code : ErrorCodes.INTERNAL) as RelayError['code'];
}
