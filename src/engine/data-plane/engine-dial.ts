// A connection the native engine dials and holds for JavaScript: the gray's pooled data
// connection. The engine connects, writes the preamble, reads exactly the white's fixed-size
// start header and only then reports it; until the connection is joined (connectJoin) the engine
// keeps watching it for a reset. No Node socket is made for it, neither for the connection to
// the service it is joined with: those two constructions and the replacement's dial were most of
// the gray's JavaScript cost per client (docs/performance.md). Opened with forwardTo, the engine
// also connects to the service and joins the two the moment the header is in, without waiting
// for JavaScript: a new client's first bytes then cross the gray on the engine thread alone.
import { EngineEvent, errnoError, nativeEngine, onNativeDialEvent, PairEndFlag, type NativeBinding } from './native-engine.js';
import type { JoinedPair, PairResult } from './joined-pair.js';
import { adoptEnginePair, connectJoinInEngine } from './splice-plane.js';

export interface DialHandlers {
  /** Connected, and the preamble was handed to the kernel in one piece. */
  onConnected(): void;
  /** The connection could not be made: nothing was sent. */
  onFailed(error: Error): void;
  /** The prefix arrived; the connection is held (or already forwarded, see forwardTo), and must
   *  now be joined (connectJoin) or destroyed. */
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

onNativeDialEvent((type, id, _listenerId, code, _a, b, prefix) => {
  const conn = dialed.get(id);
  if (!conn) {
    // Destroyed while the engine was forwarding it: the pair it made has nobody, so it ends.
    if (type === EngineEvent.header && b !== 0) adoptEnginePair(b).pair.destroy();
    return;
  }
  if (type === EngineEvent.dialed) conn.onDialed(code);
  else if (type === EngineEvent.header) conn.onPrefix(prefix ?? Buffer.alloc(0), b);
  else if (type === EngineEvent.gone) conn.onGone();
});

export function engineDialAvailable(): boolean {
  return nativeEngine() !== null;
}

export class DialedConn {
  private state: 'dialing' | 'idle' | 'held' | 'forwarded' | 'joined' | 'closed' = 'dialing';
  private readonly id: number;
  private forwarded: ReturnType<typeof adoptEnginePair> | null = null;

  private constructor(
    private readonly native: NativeBinding,
    to: Endpoint,
    preamble: Buffer,
    prefixBytes: number,
    private readonly handlers: DialHandlers,
    forwardTo: Endpoint | undefined,
  ) {
    this.id = forwardTo
      ? native.dial(to.ip, to.port, preamble, prefixBytes, to.keepAliveSec, forwardTo.ip, forwardTo.port, forwardTo.keepAliveSec)
      : native.dial(to.ip, to.port, preamble, prefixBytes, to.keepAliveSec);
    dialed.set(this.id, this);
  }

  /** Throws for arguments the engine refuses (not an IP address, an empty preamble). forwardTo:
   *  the service to join with as soon as a well-formed start header is in (no head can be sent
   *  to it then, so not with a PROXY protocol header). */
  static open(to: Endpoint, preamble: Buffer, prefixBytes: number, handlers: DialHandlers, forwardTo?: Endpoint): DialedConn {
    const native = nativeEngine();
    if (!native) throw new Error('the native engine is not loaded');
    return new DialedConn(native, to, preamble, prefixBytes, handlers, forwardTo);
  }

  /** Closes it, unless it is joined (then the pair owns it); no handler runs afterwards. */
  destroy(): void {
    if (this.state === 'joined' || this.state === 'closed') return;
    if (this.state === 'forwarded') this.forwarded!.pair.destroy();
    else this.native.closeConn(this.id);
    this.state = 'closed';
    dialed.delete(this.id);
  }

  /** Joins the held connection (side a) with a new connection to the service (side b). When the
   *  engine already did (forwardTo), this takes charge of that pair; it has no head to send. */
  connectJoin(service: Endpoint, headToService: Buffer | undefined, onClosed: (result: PairResult, reachedService: boolean) => void): JoinedPair {
    if (this.state === 'forwarded') {
      if (headToService && headToService.length > 0) throw new Error(`connection ${this.id} was forwarded by the engine: no head can go to the service now`);
      this.state = 'joined';
      this.forwarded!.onClosed((result, flags) => onClosed(result, (flags & PairEndFlag.endedBeforeConnect) === 0));
      return this.forwarded!.pair;
    }
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

  /** forwardedPair: the pair the engine made of it (forwardTo), or 0. */
  onPrefix(prefix: Buffer, forwardedPair: number): void {
    if (this.state !== 'idle') return;
    if (forwardedPair !== 0) {
      this.state = 'forwarded';
      dialed.delete(this.id);
      this.forwarded = adoptEnginePair(forwardedPair);
    } else {
      this.state = 'held';
    }
    this.handlers.onPrefix(prefix);
  }

  onGone(): void {
    if (this.state !== 'idle' && this.state !== 'held') return;
    this.state = 'closed';
    dialed.delete(this.id);
    this.handlers.onClosed();
  }
}
