// A connection the native engine dials and holds for JavaScript: the gray's pooled data
// connection. The engine connects, writes the preamble, reads exactly the white's fixed-size
// start header and only then reports it; until the connection is joined (connectJoin) the engine
// keeps watching it for a reset. No Node socket is made for it, neither for the connection to
// the service it is joined with: those two constructions and the replacement's dial were most of
// the gray's JavaScript cost per client (docs/performance.md).
import { EngineEvent, errnoError, nativeEngine, onNativeDialEvent, type NativeBinding } from './native-engine.js';
import type { JoinedPair, PairResult } from './joined-pair.js';
import { connectJoinInEngine } from './splice-plane.js';

export interface DialHandlers {
  /** Connected, and the preamble was handed to the kernel in one piece. */
  onConnected(): void;
  /** The connection could not be made: nothing was sent. */
  onFailed(error: Error): void;
  /** The prefix arrived; the connection is held, and must now be joined or destroyed. */
  onPrefix(prefix: Buffer): void;
  /** Closed by the peer (or reset) after connecting and before joining; the engine closed it. */
  onClosed(): void;
}

export interface Endpoint {
  readonly ip: string;
  readonly port: number;
  /** TCP keepalive idle time in seconds, 0 for none. */
  readonly keepAliveSec: number;
}

const dialed = new Map<number, DialedConn>();

onNativeDialEvent((type, id, _listenerId, code, _a, _b, prefix) => {
  const conn = dialed.get(id);
  if (!conn) return;
  if (type === EngineEvent.dialed) conn.onDialed(code);
  else if (type === EngineEvent.header) conn.onPrefix(prefix ?? Buffer.alloc(0));
  else if (type === EngineEvent.gone) conn.onGone();
});

export function engineDialAvailable(): boolean {
  return nativeEngine() !== null;
}

export class DialedConn {
  private state: 'dialing' | 'idle' | 'held' | 'joined' | 'closed' = 'dialing';
  private readonly id: number;

  private constructor(
    private readonly native: NativeBinding,
    to: Endpoint,
    preamble: Buffer,
    prefixBytes: number,
    private readonly handlers: DialHandlers,
  ) {
    this.id = native.dial(to.ip, to.port, preamble, prefixBytes, to.keepAliveSec);
    dialed.set(this.id, this);
  }

  /** Throws for arguments the engine refuses (not an IP address, an empty preamble). */
  static open(to: Endpoint, preamble: Buffer, prefixBytes: number, handlers: DialHandlers): DialedConn {
    const native = nativeEngine();
    if (!native) throw new Error('the native engine is not loaded');
    return new DialedConn(native, to, preamble, prefixBytes, handlers);
  }

  /** Closes it, unless it is joined (then the pair owns it); no handler runs afterwards. */
  destroy(): void {
    if (this.state === 'joined' || this.state === 'closed') return;
    this.state = 'closed';
    dialed.delete(this.id);
    this.native.closeConn(this.id);
  }

  /** Joins the held connection (side a) with a new connection to the service (side b). */
  connectJoin(service: Endpoint, headToService: Buffer | undefined, onClosed: (result: PairResult, reachedService: boolean) => void): JoinedPair {
    if (this.state !== 'held') throw new Error(`connection ${this.id} is ${this.state}, not held: it cannot be joined`);
    this.state = 'joined';
    dialed.delete(this.id);
    return connectJoinInEngine(this.id, service, headToService, onClosed);
  }

  onDialed(errno: number): void {
    if (this.state !== 'dialing') return;
    if (errno === 0) {
      this.state = 'idle';
      return this.handlers.onConnected();
    }
    this.state = 'closed';
    dialed.delete(this.id);
    this.handlers.onFailed(errnoError(errno, 'connect'));
  }

  onPrefix(prefix: Buffer): void {
    if (this.state !== 'idle') return;
    this.state = 'held';
    this.handlers.onPrefix(prefix);
  }

  onGone(): void {
    if (this.state !== 'idle' && this.state !== 'held') return;
    this.state = 'closed';
    dialed.delete(this.id);
    this.handlers.onClosed();
  }
}
