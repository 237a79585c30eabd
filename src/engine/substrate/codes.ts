// Every number that crosses the boundary between JavaScript and the engine, defined once here.
// The C++ side has the same enums in native/engine.h; test/engine/substrate-codes.test.ts parses
// that header and fails when the two disagree. Keys are the C++ enumerators' names without their
// `k` and the enum's own prefix (kRefusedNoSession is Refusal.noSession).

/** Event::Type: what an event reports. */
export const EventType = { pairEnd: 0, accepted: 1, refused: 2, gone: 3, listenerError: 4, dialed: 5, header: 6, joinedLent: 7, poolPairEnd: 8 } as const;

/** PairEndFlags: carried by a pair's end. */
export const PairEndFlag = { endedBeforeConnect: 1, endedIdle: 2, endedReused: 4 } as const;

/** Filter: who a listener lets in before a byte is read. */
export const FilterMode = { anyone: 0, nobody: 1, only: 2 } as const;

/** Watch: what a held connection's watch reports. */
export const WatchCode = { reset: 0, any: 1 } as const;

/** Refusal: why the engine refused a connection by itself. */
export const RefusalCode = {
  noSession: 1,
  wrongSource: 2,
  tooMany: 3,
  timeout: 4,
  ended: 5,
  error: 6,
  badMagic: 7,
  extra: 8,
  // The preamble check (native/verify.cc).
  badCounter: 9,
  otherSession: 10,
  badTag: 11,
  replay: 12,
  noCredit: 13,
  // The allow-list of a public port (native/allow.cc).
  notAllowed: 14,
} as const;


/** GoneReason: why a held connection went away. */
export const GoneCode = { closed: 1, data: 2 } as const;

/** Constants the engine shares with the protocol (kStartHeaderBytes, kStartHeaderVersion and the
 *  framed header's, its credit flag and where it is, a frame's length bytes), the
 *  event batch's record size (kEventRecordBytes) and the gray's stock (kStockLowWater: with
 *  this few counters left the engine wakes JavaScript at once to top it up). */
export const EngineConstant = { startHeaderBytes: 40, startHeaderVersion: 2, startHeaderVersionFramed: 3, startHeaderFlagsOffset: 7, startHeaderCredit: 1, frameLengthBytes: 4, eventRecordBytes: 112, eventRecordInline: 72, eventRecordInlineBytes: 40, stockLowWater: 16 } as const;

/** EventRecordFlags: what an event record carries inline (addresses, or a short prefix), and
 *  whether a longer prefix follows in the batch's side array. */
export const EventRecordFlag = { hasPrefix: 1, hasAddresses: 2, hasLocal: 4, remoteIPv6: 8, localIPv6: 16, inlinePrefix: 32 } as const;
