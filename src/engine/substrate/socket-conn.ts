// A held connection on a Node socket: what the JS plane's listeners (node-intake.ts) give the
// pool broker.
import type { Socket } from 'node:net';
import { resetSocket } from '../net-util.js';
import type { GoneReason, HeldConn, WatchMode } from './held-conn.js';
import { join } from './js-plane.js';
import type { Heads, Pair, OnPairEnd } from './pair.js';

export class SocketConn implements HeldConn {
  private stopWatching: (() => void) | null = null;

  /** countsPreamble: everything the socket read so far was relay's own (the preamble). */
  constructor(
    readonly socket: Socket,
    private readonly countsPreamble: boolean,
  ) {}

  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.socket.remotePort;
  }
  get localAddress(): string | undefined {
    return this.socket.localAddress;
  }
  get localPort(): number | undefined {
    return this.socket.localPort;
  }
  get preambleBytes(): number {
    return this.countsPreamble ? this.socket.bytesRead : 0;
  }
  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  watch(mode: WatchMode, onGone: (reason: GoneReason) => void): void {
    this.unwatch();
    const socket = this.socket;
    const gone = (reason: GoneReason): void => {
      this.unwatch();
      // allowHalfOpen sockets stay open after the peer's FIN: close ours too.
      socket.destroy();
      onGone(reason);
    };
    const onData = (): void => gone('data');
    const onClosed = (): void => gone('closed');
    if (mode === 'any') {
      socket.on('data', onData);
      socket.once('end', onClosed);
      socket.once('close', onClosed);
      this.stopWatching = () => {
        socket.off('data', onData);
        socket.off('end', onClosed);
        socket.off('close', onClosed);
      };
      return;
    }
    // Reading into the stream's own bounded buffer (its high-water mark) is what lets a reset
    // be noticed; the bytes stay there until the pair is joined. A FIN is not a reason to go.
    socket.on('readable', keepBuffered);
    socket.once('close', onClosed);
    this.stopWatching = () => {
      socket.off('readable', keepBuffered);
      socket.off('close', onClosed);
    };
  }

  unwatch(): void {
    this.stopWatching?.();
    this.stopWatching = null;
  }

  destroy(): void {
    this.unwatch();
    resetSocket(this.socket);
  }

  joinWith(other: HeldConn, heads: Heads, onClosed: OnPairEnd): Pair {
    if (!(other instanceof SocketConn)) throw new TypeError('a Node socket can only be joined with another Node socket here');
    this.unwatch();
    other.unwatch();
    return join(this.socket, other.socket, heads, onClosed);
  }
}

/** The 'readable' listener of a waiting client: its presence makes the stream read. */
function keepBuffered(): void {}
