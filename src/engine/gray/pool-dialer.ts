// Keeps the gray's pool of pre-opened data connections: one connection per credit the white has
// granted, each opened with a preamble that proves it belongs to this session. An idle one
// waits for the white's start header; once it arrives the connection is handed to the
// forwarder and the white (which consumed it) grants a replacement at once.
import net, { type Socket } from 'node:net';
import type { GrayConfig } from '../../config/types.js';
import type { Logger } from '../../log.js';
import { Backoff } from '../backoff.js';
import { encodePreamble } from '../protocol/preamble.js';
import { decodeStartHeader, START_HEADER_BYTES, type ClientAddressInfo } from '../protocol/start-header.js';

export interface PoolDialerOptions {
  readonly host: string;
  readonly port: number;
  readonly sessionId: Buffer;
  readonly dataKey: Buffer;
  readonly poolTarget: number;
  readonly config: GrayConfig;
  readonly logger: Logger;
  readonly onActivated: (socket: Socket, client: ClientAddressInfo, rest: Buffer) => void;
  readonly onPoolReady: (idle: number) => void;
}

export class PoolDialer {
  /** Explicit credits (WELCOME, GRANT) plus one implicit credit per activation: see
   *  GraySession on the white for why both sides can count the implicit ones on their own. */
  private explicitUpTo = 0;
  private activations = 0;
  private nextCounter = 1;
  private readonly idle = new Set<Socket>();
  private readonly dialing = new Set<Socket>();
  private readonly backoff: Backoff;
  private retryTimer: NodeJS.Timeout | null = null;
  /** Counters whose dial failed before anything was sent: safe to use again. */
  private readonly retryCounters: number[] = [];
  private stopped = false;
  private readyReported = false;

  constructor(private readonly o: PoolDialerOptions) {
    this.backoff = new Backoff(o.config.limits.reconnectBaseMs, o.config.limits.reconnectMaxMs);
  }

  get idleCount(): number {
    return this.idle.size;
  }

  grant(upTo: number): void {
    if (upTo > this.explicitUpTo) this.explicitUpTo = upTo;
    this.fill();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    for (const s of this.idle) s.destroy();
    for (const s of this.dialing) s.destroy();
    this.idle.clear();
    this.dialing.clear();
  }

  private fill(): void {
    if (this.stopped || this.retryTimer) return;
    while (this.retryCounters.length > 0) this.dial(this.retryCounters.shift()!);
    const limit = this.explicitUpTo + this.activations;
    while (this.nextCounter <= limit) this.dial(this.nextCounter++);
  }

  private dial(counter: number): void {
    const socket = net.connect({ host: this.o.host, port: this.o.port, allowHalfOpen: true });
    this.dialing.add(socket);
    let connected = false;
    let activated = false;
    let header: Buffer = Buffer.alloc(0);

    socket.on('error', (err) => {
      if (!connected && !this.stopped) {
        // Nothing was sent, so the counter was never seen by the white: retry it after a delay.
        this.retryCounters.push(counter);
        this.scheduleRetry(err);
      }
      socket.destroy();
    });
    socket.once('connect', () => {
      connected = true;
      this.dialing.delete(socket);
      if (this.stopped) return void socket.destroy();
      this.backoff.reset();
      socket.setNoDelay(true);
      socket.setKeepAlive(true, this.o.config.limits.keepAliveDelayMs);
      socket.write(encodePreamble(this.o.sessionId, counter, this.o.dataKey));
      this.idle.add(socket);
      if (!this.readyReported && this.idle.size >= this.o.poolTarget) {
        this.readyReported = true;
        this.o.onPoolReady(this.idle.size);
      }
    });
    const onData = (chunk: Buffer): void => {
      header = header.length === 0 ? chunk : Buffer.concat([header, chunk]);
      if (header.length < START_HEADER_BYTES) return;
      socket.off('data', onData);
      this.idle.delete(socket);
      let client: ClientAddressInfo;
      try {
        client = decodeStartHeader(header.subarray(0, START_HEADER_BYTES));
      } catch (err) {
        this.o.logger.warn({ detail: (err as Error).message }, 'invalid start header from white');
        return void socket.destroy();
      }
      activated = true;
      // The start header is our replacement credit: dial the successor before forwarding.
      this.activations += 1;
      this.fill();
      this.o.onActivated(socket, client, header.subarray(START_HEADER_BYTES));
    };
    socket.on('data', onData);
    // The socket is allowHalfOpen (for forwarding), so the white's FIN on an idle connection it
    // recycled would leave ours open in CLOSE-WAIT. Before activation a FIN means it is over.
    socket.once('end', () => {
      if (!activated) socket.destroy();
    });
    socket.once('close', () => {
      this.dialing.delete(socket);
      // Closed while idle: the white recycled it or the path broke. The white grants a
      // replacement when it sees the close; nothing to do here.
      if (!activated) this.idle.delete(socket);
    });
  }

  private scheduleRetry(err: Error): void {
    if (this.retryTimer || this.stopped) return;
    const delay = this.backoff.next();
    this.o.logger.warn({ detail: err.message, retryInMs: delay, data: `${this.o.host}:${this.o.port}` }, 'data connection failed');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.fill();
    }, delay);
  }
}
