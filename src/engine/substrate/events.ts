// The engine's events as JavaScript sees them: one discriminated union, decoded once from the
// batches the addon's thread-safe function passes (a buffer of fixed-size records and an array
// of their variable parts; native/napi.cc CallOnBatch says why). Nothing past decodeBatch looks
// at a record's layout.
import { formatIPv4, formatIPv6 } from '../protocol/ip-address.js';
import { EngineConstant, EventRecordFlag, EventType, GoneCode, PairEndFlag, RefusalCode } from './codes.js';

export interface Address {
  readonly ip: string;
  readonly port: number;
}

/** Why the engine refused a connection by itself. */
export type Refusal =
  | 'no-session'
  | 'wrong-source'
  | 'too-many'
  | 'timeout'
  | 'ended'
  | 'error'
  | 'bad-magic'
  | 'extra'
  // The preamble check of a gray's data port (native/verify.cc).
  | 'bad-counter'
  | 'other-session'
  | 'bad-tag'
  | 'replay'
  | 'no-credit'
  // The allow-list of a public port (native/allow.cc).
  | 'not-allowed';

/**
 * What a held connection's watch reports: 'data' — it spoke when it must stay silent; 'closed'
 * — its peer closed or reset it.
 */
export type GoneReason = 'data' | 'closed';

export type EngineEvent =
  /** A pair ended: its byte counts, errno (0, or ECANCELED after destroy), and whether it ended
   *  before its side B (a service being connected to) answered. stock: for a pair the engine
   *  forwarded from a stock's connection (dial-stock.ts), that stock, else 0; header: then, if it
   *  never reached the service, the start header it was forwarded for. reused: its data
   *  connection waits for the stock's next start header (native/engine.h, Framing). */
  | { readonly type: 'pairEnd'; readonly pair: number; readonly errno: number; readonly bytesFromA: number; readonly bytesFromB: number; readonly endedBeforeConnect: boolean; readonly stock: number; readonly header: Buffer | null; readonly reused: boolean }
  /** A listener's connection read its prefix (or, with none, was accepted) and is held. local is
   *  null for a connection that sent a prefix. On a gray's data port the engine verified the
   *  preamble: counter and session (the epoch JavaScript gave its keys) say whose it is (and
   *  prefix is empty); both 0 elsewhere, and counter 0 for a data connection back in the pool
   *  after a pair (reused, native/engine.h Framing). */
  | { readonly type: 'accepted'; readonly conn: number; readonly listener: number; readonly prefix: Buffer; readonly remote: Address; readonly local: Address | null; readonly counter: number; readonly session: number }
  /** received: the prefix bytes read before the refusal; errno: the socket error, if any. */
  | { readonly type: 'refused'; readonly listener: number; readonly refusal: Refusal; readonly errno: number; readonly received: Buffer; readonly remote: Address }
  /** A held connection went away; the engine closed it. listener is 0 for a dialed one; stock:
   *  the stock it was dialed from, or 0; remote: an accepted one's source (else empty). */
  | { readonly type: 'gone'; readonly conn: number; readonly listener: number; readonly reason: GoneReason; readonly stock: number; readonly remote: Address }
  | { readonly type: 'listenerError'; readonly listener: number; readonly errno: number }
  /** A dialed connection connected and wrote its preamble (errno 0), or failed. stock: the stock
   *  it was dialed from (dial-stock.ts), 0 for one JavaScript dialed. */
  | { readonly type: 'dialed'; readonly conn: number; readonly stock: number; readonly errno: number }
  /** A dialed connection read its prefix (the start header). pair: the pair the engine joined it
   *  into with the service by itself, or 0 when JavaScript is to forward it; stock: the stock it
   *  was dialed from, or 0. credit: the header is worth a successor (every one but a framed
   *  header without the flag). */
  | { readonly type: 'header'; readonly conn: number; readonly header: Buffer; readonly pair: number; readonly stock: number; readonly credit: boolean }
  /** The engine joined the held client with a connection of its gray's pool into pair; credit:
   *  the join is worth a successor credit (always, unless the session reuses its connections
   *  and the pool had its refill level idle). */
  | { readonly type: 'joinedLent'; readonly pair: number; readonly listener: number; readonly client: number; readonly lent: number; readonly remote: Address; readonly credit: boolean }
  /** A pair of joinedLent ended (native/pool-pairs.cc): the client's public listener, its
   *  connection's id and address, the bytes from and to it, errno (0, or ECANCELED after destroy
   *  or the idle timeout), whether the gray's idle timeout ended it, how long it lived and how
   *  long it had been silent. Everything its end reports, so JavaScript keeps nothing per pair. */
  | {
      readonly type: 'poolPairEnd';
      readonly pair: number;
      readonly listener: number;
      readonly errno: number;
      readonly bytesFromClient: number;
      readonly bytesToClient: number;
      readonly endedIdle: boolean;
      readonly client: number;
      readonly remote: Address;
      readonly ageMs: number;
      readonly idleMs: number;
    };

export type EngineEventOf<T extends EngineEvent['type']> = Extract<EngineEvent, { type: T }>;

/** What the addon passes per batch: records (engine.h kEventRecordBytes each: int32 type, id,
 *  listenerId, code, remotePort, localPort, flags, stockId; float64 a, b; int32 clientConn,
 *  endFlags; float64 ageMs, idleMs; then the inline bytes: the remote and local IP addresses, or
 *  a short prefix) and the prefixes too long to be inline, in order. */
export type EventBatch = [records: ArrayBuffer, side: ReadonlyArray<Buffer>];

const refusals: Record<number, Refusal> = {
  [RefusalCode.noSession]: 'no-session',
  [RefusalCode.wrongSource]: 'wrong-source',
  [RefusalCode.tooMany]: 'too-many',
  [RefusalCode.timeout]: 'timeout',
  [RefusalCode.ended]: 'ended',
  [RefusalCode.error]: 'error',
  [RefusalCode.badMagic]: 'bad-magic',
  [RefusalCode.extra]: 'extra',
  [RefusalCode.badCounter]: 'bad-counter',
  [RefusalCode.otherSession]: 'other-session',
  [RefusalCode.badTag]: 'bad-tag',
  [RefusalCode.replay]: 'replay',
  [RefusalCode.noCredit]: 'no-credit',
  [RefusalCode.notAllowed]: 'not-allowed',
};

const EMPTY = Buffer.alloc(0);

const INT32_SLOTS = EngineConstant.eventRecordBytes / 4;
const FLOAT64_SLOTS = EngineConstant.eventRecordBytes / 8;
const INLINE_SLOT = EngineConstant.eventRecordInline / 4;

/** A batch's events, oldest first (the engine's order, so a pair's header or join comes before
 *  its end); throws on a type this side does not know (the header test keeps the two in step, so
 *  that is a build mismatch). */
export function decodeBatch(...[records, side]: EventBatch): EngineEvent[] {
  const ints = new Int32Array(records);
  const floats = new Float64Array(records);
  const count = records.byteLength / EngineConstant.eventRecordBytes;
  const events: EngineEvent[] = [];
  let next = 0;
  for (let i = 0; i < count; i++) {
    const at = i * INT32_SLOTS;
    const flags = ints[at + 6]!;
    let prefix: Buffer | InlinePrefix | null = null;
    if (flags & EventRecordFlag.hasPrefix) prefix = side[next++]!;
    else if (flags & EventRecordFlag.inlinePrefix) prefix = new InlinePrefix(records, i * EngineConstant.eventRecordBytes + EngineConstant.eventRecordInline, ints[at + 5]!);
    events.push(decodeRecord(ints, floats, at, i * FLOAT64_SLOTS, prefix));
  }
  return events;
}

const NO_ADDRESS: Address = { ip: '', port: 0 };

/** The remote (or local) address of the record at int32 slot at; NO_ADDRESS (null for a local
 *  one) when it carries none. */
function addressAt(ints: Int32Array, at: number, local: boolean): Address | null {
  const flags = ints[at + 6]!;
  if (!(flags & EventRecordFlag.hasAddresses)) return local ? null : NO_ADDRESS;
  if (!local) return new PackedAddress(ints, at + INLINE_SLOT, (flags & EventRecordFlag.remoteIPv6) !== 0, ints[at + 4]!);
  if (!(flags & EventRecordFlag.hasLocal)) return null;
  return new PackedAddress(ints, at + INLINE_SLOT + 4, (flags & EventRecordFlag.localIPv6) !== 0, ints[at + 5]!);
}

/** An event of a client or data connection whose addresses are made objects only when read:
 *  for most connections nothing reads them (a report nobody wants). Until then it keeps its
 *  batch's records, as long as it lives (events die young). */
class Addressed {
  readonly #ints: Int32Array;
  readonly #at: number;
  #remote: Address | null = null;

  constructor(ints: Int32Array, at: number) {
    this.#ints = ints;
    this.#at = at;
  }

  get remote(): Address {
    return (this.#remote ??= addressAt(this.#ints, this.#at, false)!);
  }

  protected localAddress(): Address | null {
    return addressAt(this.#ints, this.#at, true);
  }
}

class AcceptedEvent extends Addressed {
  readonly type = 'accepted';

  constructor(
    ints: Int32Array,
    at: number,
    readonly conn: number,
    readonly listener: number,
    readonly prefix: Buffer,
    readonly counter: number,
    readonly session: number,
  ) {
    super(ints, at);
  }

  get local(): Address | null {
    return this.localAddress();
  }
}

class JoinedLentEvent extends Addressed {
  readonly type = 'joinedLent';

  constructor(
    ints: Int32Array,
    at: number,
    readonly pair: number,
    readonly listener: number,
    readonly client: number,
    readonly lent: number,
    readonly credit: boolean,
  ) {
    super(ints, at);
  }
}

class PoolPairEndEvent extends Addressed {
  readonly type = 'poolPairEnd';

  constructor(
    ints: Int32Array,
    at: number,
    readonly pair: number,
    readonly listener: number,
    readonly errno: number,
    readonly bytesFromClient: number,
    readonly bytesToClient: number,
    readonly endedIdle: boolean,
    readonly client: number,
    readonly ageMs: number,
    readonly idleMs: number,
  ) {
    super(ints, at);
  }
}

/** A prefix a record carries inline, as a Buffer when asked: a view, not a copy, which keeps
 *  the batch's few kilobytes alive only as long as it lives. */
class InlinePrefix {
  constructor(
    readonly records: ArrayBuffer,
    readonly offset: number,
    readonly length: number,
  ) {}

  buffer(): Buffer {
    return Buffer.from(this.records, this.offset, this.length);
  }
}

/** A dialed connection's start header: made a Buffer when read (one the engine forwarded by
 *  itself is read only for a debug log). */
class HeaderEvent {
  readonly type = 'header';
  #header: Buffer | InlinePrefix;

  constructor(
    readonly conn: number,
    header: Buffer | InlinePrefix,
    readonly pair: number,
    readonly stock: number,
    readonly credit: boolean,
  ) {
    this.#header = header;
  }

  get header(): Buffer {
    if (this.#header instanceof InlinePrefix) this.#header = this.#header.buffer();
    return this.#header;
  }
}

const bufferOf = (prefix: Buffer | InlinePrefix | null): Buffer | null => (prefix instanceof InlinePrefix ? prefix.buffer() : prefix);

/** An address an event carried as bytes: its text is made the first time it is read (most
 *  never are: a client's address is for reports nobody may want). The IP's bytes are kept as
 *  four numbers, so the batch they came in is not kept alive. */
class PackedAddress implements Address {
  private readonly w0: number;
  private readonly w1: number;
  private readonly w2: number;
  private readonly w3: number;
  private text: string | null = null;

  constructor(ints: Int32Array, slot: number, private readonly v6: boolean, readonly port: number) {
    this.w0 = ints[slot]!;
    this.w1 = v6 ? ints[slot + 1]! : 0;
    this.w2 = v6 ? ints[slot + 2]! : 0;
    this.w3 = v6 ? ints[slot + 3]! : 0;
  }

  get ip(): string {
    return (this.text ??= this.format());
  }

  private format(): string {
    const bytes = Buffer.from(Int32Array.of(this.w0, this.w1, this.w2, this.w3).buffer);
    return this.v6 ? ntopIPv6(bytes) : formatIPv4(bytes);
  }

  /** What a log or a test sees: the address as its text. */
  toJSON(): Address {
    return { ip: this.ip, port: this.port };
  }
}

/** An IPv6 address as inet_ntop writes it, which is how Node (libuv) names a socket's address,
 *  so both data planes report a client alike: RFC 5952, and an address whose first 96 bits are
 *  zero but the last 32 are not an IPv4 one ("::a.b.c.d"). */
function ntopIPv6(bytes: Buffer): string {
  if (bytes.readUInt32BE(0) === 0 && bytes.readUInt32BE(4) === 0 && bytes.readUInt32BE(8) === 0 && bytes.readUInt16BE(12) !== 0) return `::${formatIPv4(bytes.subarray(12))}`;
  return formatIPv6(bytes);
}

/** One record at int32 slot at (float64 slot wide), its variable parts already taken. */
function decodeRecord(ints: Int32Array, floats: Float64Array, at: number, wide: number, prefix: Buffer | InlinePrefix | null): EngineEvent {
  const type = ints[at]!;
  const id = ints[at + 1]! >>> 0;
  const listenerId = ints[at + 2]! >>> 0;
  const code = ints[at + 3]!;
  const stock = ints[at + 7]! >>> 0;
  const a = floats[wide + 4]!;
  const b = floats[wide + 5]!;
  switch (type) {
    case EventType.pairEnd:
      return { type: 'pairEnd', pair: id, errno: code, bytesFromA: a, bytesFromB: b, endedBeforeConnect: (listenerId & PairEndFlag.endedBeforeConnect) !== 0, stock, header: bufferOf(prefix), reused: (listenerId & PairEndFlag.endedReused) !== 0 };
    case EventType.accepted:
      return new AcceptedEvent(ints, at, id, listenerId, bufferOf(prefix) ?? EMPTY, a, b);
    case EventType.refused:
      return { type: 'refused', listener: listenerId, refusal: refusals[code] ?? 'error', errno: b, received: bufferOf(prefix) ?? EMPTY, remote: addressAt(ints, at, false)! };
    case EventType.gone:
      return { type: 'gone', conn: id, listener: listenerId, reason: code === GoneCode.data ? 'data' : 'closed', stock, remote: addressAt(ints, at, false)! };
    case EventType.listenerError:
      return { type: 'listenerError', listener: listenerId, errno: code };
    case EventType.dialed:
      return { type: 'dialed', conn: id, stock: listenerId, errno: code };
    case EventType.header:
      return new HeaderEvent(id, prefix ?? EMPTY, b, stock, code === 0);
    case EventType.joinedLent:
      return new JoinedLentEvent(ints, at, id, listenerId, a, b, code === 0);
    case EventType.poolPairEnd:
      return new PoolPairEndEvent(ints, at, id, listenerId, code, a, b, (ints[at + 13]! & PairEndFlag.endedIdle) !== 0, ints[at + 12]! >>> 0, floats[wide + 7]!, floats[wide + 8]!);
    default:
      throw new Error(`the engine reported event type ${type}, unknown to this build`);
  }
}
