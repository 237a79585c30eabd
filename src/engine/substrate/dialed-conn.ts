// A connection an engine dials and holds for JavaScript: the gray's pooled data connection. The
// engine connects, writes the preamble, reads exactly the white's fixed-size start header and
// only then reports it; until the connection is forwarded the engine keeps watching it for a
// reset. No Node socket is made for it, nor for the connection to the service it is joined
// with: those two constructions and the replacement's dial were most of the gray's JavaScript
// cost per client (docs/performance.md). Opened with a service table (routes), the engine also
// forwards the moment the header is in, to the route of the header's service, without waiting
// for JavaScript: a new client's first bytes then cross the gray on the engine thread alone.
// One dialed from a stock (dial-stock.ts) has no object until the engine holds it after its
// header for JavaScript to forward (held()).
import { errnoError, type ConnOwner, type Engine, type EnginePair } from './engine.js';
import type { EngineEventOf } from './events.js';
import type { Pair, PairEnd } from './pair.js';

export interface DialHandlers {
  /** Connected, and the preamble was handed to the kernel in one piece. */
  onConnected(): void;
  /** The connection could not be made: nothing was sent. */
  onFailed(error: Error): void;
  /** The prefix arrived; the connection is held (or already forwarded, see DialedConn.open), and
   *  must now be forwarded or destroyed. */
  onPrefix(prefix: Buffer): void;
  /** Closed by the peer (or reset) after connecting and before forwarding; the engine closed it. */
  onClosed(): void;
}

export interface Endpoint {
  /** An IP address (host names are resolved before an engine sees them). */
  readonly ip: string;
  readonly port: number;
  /** TCP keepalive idle time in seconds, 0 for none. */
  readonly keepAliveSec: number;
}

/** reachedService is false when the pair ended before the service answered. */
/** reused: the data connection waits for its stock's next start header (native/engine.h, Framing). */
export type OnForwardEnd = (end: PairEnd, reachedService: boolean, reused: boolean) => void;

export class DialedConn implements ConnOwner {
  private state: 'dialing' | 'idle' | 'held' | 'forwarded' | 'joined' | 'closed';
  private forwarded: EnginePair | null = null;

  /** Dials one connection. Throws for arguments the engine refuses (not an IP address, an empty
   *  preamble). routes: a service table (Engine.handle.setRoutes) to forward by as soon as a
   *  well-formed start header is in, when it has a route for the header's service. */
  static dial(engine: Engine, to: Endpoint, preamble: Buffer, prefixBytes: number, handlers: DialHandlers, routes?: number): DialedConn {
    const id = routes !== undefined
      ? engine.handle.dial(to.ip, to.port, preamble, prefixBytes, to.keepAliveSec, routes)
      : engine.handle.dial(to.ip, to.port, preamble, prefixBytes, to.keepAliveSec);
    return new DialedConn(engine, id, handlers, 'dialing');
  }

  /** Takes charge of a connection the engine dialed from a stock (dial-stock.ts) and holds
   *  after its prefix, for JavaScript to forward. onClosed: it went away before that. */
  static held(engine: Engine, id: number, onClosed: () => void): DialedConn {
    return new DialedConn(engine, id, { onConnected: () => {}, onFailed: () => {}, onPrefix: () => {}, onClosed }, 'held');
  }

  private constructor(
    private readonly engine: Engine,
    private readonly id: number,
    private readonly handlers: DialHandlers,
    state: 'dialing' | 'held',
  ) {
    this.state = state;
    engine.addConn(id, this);
  }

  /** The engine forwarded it by itself as the start header came in (a route of its table). */
  get forwardedByEngine(): boolean {
    return this.state === 'forwarded';
  }

  /** Closes it, unless it is joined (then the pair owns it); no handler runs afterwards. */
  destroy(): void {
    if (this.state === 'joined' || this.state === 'closed') return;
    if (this.state === 'forwarded') this.forwarded!.destroy();
    else this.engine.handle.closeConn(this.id);
    this.state = 'closed';
    this.engine.removeConn(this.id);
  }

  /** Joins the held connection (side a) with a new connection to the service (side b). When the
   *  engine already did, this takes charge of that pair; it has no head to send. */
  forward(service: Endpoint, headToService: Buffer | undefined, onEnd: OnForwardEnd): Pair {
    const onPairEnd = (end: PairEnd, endedBeforeConnect: boolean, reused: boolean): void => onEnd(end, !endedBeforeConnect, reused);
    if (this.state === 'forwarded') {
      if (headToService && headToService.length > 0) throw new Error(`connection ${this.id} was forwarded by the engine: no head can go to the service now`);
      this.state = 'joined';
      return this.forwarded!.onEnd(onPairEnd);
    }
    if (this.state !== 'held') throw new Error(`connection ${this.id} is ${this.state}, not held: it cannot be forwarded`);
    this.state = 'joined';
    this.engine.removeConn(this.id);
    const id = this.engine.handle.forward(this.id, service.ip, service.port, headToService ?? null, service.keepAliveSec);
    return this.engine.track(id).onEnd(onPairEnd);
  }

  connEvent(event: EngineEventOf<'gone' | 'dialed' | 'header'>, pair: EnginePair | null): void {
    if (event.type === 'dialed') return this.onDialed(event.errno);
    if (event.type === 'header') return this.onHeader(event.header, pair, event.pair);
    if (event.type === 'gone') return this.onGone();
  }

  private onDialed(errno: number): void {
    if (this.state !== 'dialing') return;
    if (errno === 0) {
      this.state = 'idle';
      return this.handlers.onConnected();
    }
    this.state = 'closed';
    this.engine.removeConn(this.id);
    this.handlers.onFailed(errnoError(errno, 'connect'));
  }

  /** forwarded: the pair the engine made of it by itself, or null. */
  private onHeader(header: Buffer, forwarded: EnginePair | null, pairId: number): void {
    if (this.state !== 'idle') {
      if (forwarded) forwarded.destroy();
      else if (pairId !== 0) this.engine.handle.destroy(pairId);
      return;
    }
    if (forwarded) {
      this.state = 'forwarded';
      this.engine.removeConn(this.id);
      this.forwarded = forwarded;
    } else {
      this.state = 'held';
    }
    this.handlers.onPrefix(header);
  }

  private onGone(): void {
    if (this.state !== 'idle' && this.state !== 'held') return;
    this.state = 'closed';
    this.engine.removeConn(this.id);
    this.handlers.onClosed();
  }
}
