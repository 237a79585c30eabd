// The engine's events as JavaScript sees them: one discriminated union, decoded once from the
// positional arguments the addon's thread-safe function passes (native/napi.cc CallOnEvent says
// why positional). Nothing past decodeEvent looks at a slot number.
import { EventType, GoneCode, PairEndFlag, RefusalCode } from './codes.js';

export interface Address {
  readonly ip: string;
  readonly port: number;
}

/** Why the engine refused a connection by itself. */
export type Refusal = 'no-session' | 'wrong-source' | 'too-many' | 'timeout' | 'ended' | 'error' | 'bad-magic' | 'extra' | 'not-allowed';

/**
 * What a held connection's watch reports: 'data' — it spoke when it must stay silent; 'closed'
 * — its peer closed or reset it.
 */
export type GoneReason = 'data' | 'closed';

export type EngineEvent =
  /** A pair ended: its byte counts, errno (0, or ECANCELED after destroy), and whether it ended
   *  before its side B (a service being connected to) answered. */
  | { readonly type: 'pairEnd'; readonly pair: number; readonly errno: number; readonly bytesFromA: number; readonly bytesFromB: number; readonly endedBeforeConnect: boolean }
  /** A listener's connection read its prefix (or, with none, was accepted) and is held. local is
   *  null for a connection that sent a prefix. */
  | { readonly type: 'accepted'; readonly conn: number; readonly listener: number; readonly prefix: Buffer; readonly remote: Address; readonly local: Address | null }
  /** received: the prefix bytes read before the refusal; errno: the socket error, if any. */
  | { readonly type: 'refused'; readonly listener: number; readonly refusal: Refusal; readonly errno: number; readonly received: Buffer; readonly remote: Address }
  /** A held connection went away; the engine closed it. listener is 0 for a dialed one. */
  | { readonly type: 'gone'; readonly conn: number; readonly listener: number; readonly reason: GoneReason }
  | { readonly type: 'listenerError'; readonly listener: number; readonly errno: number }
  /** A dialed connection connected and wrote its preamble (errno 0), or failed. */
  | { readonly type: 'dialed'; readonly conn: number; readonly errno: number }
  /** A dialed connection read its prefix (the start header). pair: the pair the engine joined it
   *  into with the service by itself, or 0 when JavaScript is to forward it. */
  | { readonly type: 'header'; readonly conn: number; readonly header: Buffer; readonly pair: number }
  /** The engine joined the held client with a lent connection into pair. */
  | { readonly type: 'joinedLent'; readonly pair: number; readonly listener: number; readonly client: number; readonly lent: number; readonly remote: Address; readonly local: Address }
  /** joinLent found no lent connection for this client. */
  | { readonly type: 'noneLent'; readonly client: number };

export type EngineEventOf<T extends EngineEvent['type']> = Extract<EngineEvent, { type: T }>;

/** The positional arguments of native/napi.cc CallOnEvent. */
export type RawEvent = [type: number, id: number, listenerId: number, code: number, a: number, b: number, prefix?: Buffer, remoteIp?: string, remotePort?: number, localIp?: string, localPort?: number];

const refusals: Record<number, Refusal> = {
  [RefusalCode.noSession]: 'no-session',
  [RefusalCode.wrongSource]: 'wrong-source',
  [RefusalCode.tooMany]: 'too-many',
  [RefusalCode.timeout]: 'timeout',
  [RefusalCode.ended]: 'ended',
  [RefusalCode.error]: 'error',
  [RefusalCode.badMagic]: 'bad-magic',
  [RefusalCode.extra]: 'extra',
  [RefusalCode.notAllowed]: 'not-allowed',
};

const EMPTY = Buffer.alloc(0);

/** One event from the addon's arguments; throws on a type this side does not know (the header
 *  test keeps the two in step, so that is a build mismatch). */
export function decodeEvent(...[type, id, listenerId, code, a, b, prefix, remoteIp, remotePort, localIp, localPort]: RawEvent): EngineEvent {
  const remote = (): Address => ({ ip: remoteIp ?? '', port: remotePort ?? 0 });
  const local = (): Address | null => (localIp ? { ip: localIp, port: localPort ?? 0 } : null);
  switch (type) {
    case EventType.pairEnd:
      return { type: 'pairEnd', pair: id, errno: code, bytesFromA: a, bytesFromB: b, endedBeforeConnect: (listenerId & PairEndFlag.endedBeforeConnect) !== 0 };
    case EventType.accepted:
      return { type: 'accepted', conn: id, listener: listenerId, prefix: prefix ?? EMPTY, remote: remote(), local: local() };
    case EventType.refused:
      return { type: 'refused', listener: listenerId, refusal: refusals[code] ?? 'error', errno: b, received: prefix ?? EMPTY, remote: remote() };
    case EventType.gone:
      return { type: 'gone', conn: id, listener: listenerId, reason: code === GoneCode.data ? 'data' : 'closed' };
    case EventType.listenerError:
      return { type: 'listenerError', listener: listenerId, errno: code };
    case EventType.dialed:
      return { type: 'dialed', conn: id, errno: code };
    case EventType.header:
      return { type: 'header', conn: id, header: prefix ?? EMPTY, pair: b };
    case EventType.joinedLent:
      return { type: 'joinedLent', pair: id, listener: listenerId, client: a, lent: b, remote: remote(), local: local() ?? { ip: '', port: 0 } };
    case EventType.noneLent:
      return { type: 'noneLent', client: id };
    default:
      throw new Error(`the engine reported event type ${type}, unknown to this build`);
  }
}
