// Loading the native engine (native/, see engine.h) once, and routing what it reports: the end
// of a pair to the splice plane, accepted / refused / gone connections to the native listeners,
// dialed connections' progress to the engine dialer. They register here, so the addon has a
// single callback and a single place that knows its shape.
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

export interface NativeBinding {
  init(onEvent: (...args: EventArgs) => void): void;
  join(fdA: number, fdB: number, headToA: Buffer | null, headToB: Buffer | null): number;
  joinConns(connA: number, connB: number, headToA: Buffer | null, headToB: Buffer | null): number;
  destroy(id: number): void;
  bytes(id: number): [number, number] | null;
  stats(): { pairs: number; pipes: number; conns: number };
  listen(ip: string, port: number, backlog: number, prefixBytes: number, prefixTimeoutMs: number, keepAliveSec: number, watchAny: boolean, magic: Buffer | null): [number, number];
  closeListener(id: number): void;
  filter(listenerId: number, mode: number, ip: string | null, maxPending: number): void;
  closeConn(id: number): void;
  /** With serviceIp: forward to that service as soon as a well-formed start header is read. */
  dial(ip: string, port: number, preamble: Buffer, prefixBytes: number, keepAliveSec: number, serviceIp?: string, servicePort?: number, serviceKeepAliveSec?: number): number;
  connectJoin(connId: number, ip: string, port: number, headToService: Buffer | null, keepAliveSec: number): number;
  /** Lent connections (native/lend.cc): connId may be paired by the engine with a client of listenerId. */
  lend(listenerId: number, connId: number): void;
  /** Pairs the held client clientId with one of listenerId's lent connections (paired), or says none (noneLent). */
  pairLent(listenerId: number, clientId: number): void;
  /** malloc_trim: free malloc pages back to the system (native/memory.cc). */
  trimMalloc(): void;
}

/** The engine's event types (Event::Type in the addon). */
export const EngineEvent = { pairEnd: 0, accepted: 1, refused: 2, gone: 3, listenerError: 4, dialed: 5, header: 6, paired: 7, noneLent: 8 } as const;

/** A pair's end carries these flags in the listenerId slot (PairEndFlags in the addon). */
export const PairEndFlag = { endedBeforeConnect: 1 } as const;

/** type, id, listenerId (0 for a dialed connection; flags for pairEnd), code, a, b (for header:
 *  the pair the engine forwarded it into, or 0; for paired: the client's and the lent
 *  connection's ids), then for accepted/refused/header: prefix, and for accepted/refused/paired:
 *  remote ip and port, local ip and port. */
export type EventArgs = [type: number, id: number, listenerId: number, code: number, a: number, b: number, prefix?: Buffer, remoteIp?: string, remotePort?: number, localIp?: string, localPort?: number];

export type EventHandler = (...args: EventArgs) => void;

/** Whether the engine can listen on or dial this host: an IP address its inet_pton parses. A
 *  host name, and an IPv6 address with a zone index (fe80::1%eth0, which Node accepts and the
 *  config allows), stay with Node's sockets. */
export function engineTakesAddress(host: string): boolean {
  return net.isIP(host) !== 0 && !host.includes('%');
}

/** From dist/src/engine/data-plane/ to the package root: node-gyp-build takes build/Release
 *  there (built from source) or else the prebuilt binary under native/prebuilds/. */
const NATIVE_DIR = fileURLToPath(new URL('../../../../native', import.meta.url));
let modulePath: string | null = null;

let binding: NativeBinding | null = null;
let loadError: string | null = null;
let loaded = false;
let onPairEnd: EventHandler = () => {};
let onConnEvent: EventHandler = () => {};
let onDialEvent: EventHandler = () => {};

function dispatch(...args: EventArgs): void {
  const [type, , listenerId] = args;
  if (type === EngineEvent.pairEnd) onPairEnd(...args);
  else if (type === EngineEvent.dialed || type === EngineEvent.header || (type === EngineEvent.gone && listenerId === 0)) onDialEvent(...args);
  else onConnEvent(...args);
}

/** The started engine, or null with the reason in nativeUnavailableReason(). Loaded once. */
export function nativeEngine(): NativeBinding | null {
  if (loaded) return binding;
  loaded = true;
  if (process.platform !== 'linux') {
    loadError = `splice(2) is Linux only (this is ${process.platform})`;
    return null;
  }
  try {
    const require = createRequire(import.meta.url);
    modulePath = (require('node-gyp-build') as { resolve(dir: string): string }).resolve(NATIVE_DIR);
    const candidate = require(modulePath) as NativeBinding;
    candidate.init(dispatch);
    binding = candidate;
  } catch (err) {
    loadError = `${modulePath ?? NATIVE_DIR}: ${err instanceof Error ? err.message.replace(/\s+/g, ' ').trim() : String(err)}`;
  }
  return binding;
}

/** The addon file that was loaded (built here or prebuilt), or null. */
export function nativeModulePath(): string | null {
  return nativeEngine() ? modulePath : null;
}

export function nativeUnavailableReason(): string | null {
  nativeEngine();
  return loadError;
}

export function onNativePairEnd(handler: EventHandler): void {
  onPairEnd = handler;
}

export function onNativeConnEvent(handler: EventHandler): void {
  onConnEvent = handler;
}

export function onNativeDialEvent(handler: EventHandler): void {
  onDialEvent = handler;
}

const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([name, value]) => [value, name]));

/** An Error for an errno the engine reported, shaped like Node's system errors. */
export function errnoError(errno: number, syscall: string): Error {
  const name = errnoNames.get(errno) ?? `errno ${errno}`;
  return Object.assign(new Error(`${syscall} ${name}`), { code: name, errno: -errno, syscall });
}

/** The code (EADDRINUSE...) of an exception the addon threw for a failed system call. */
export function codeOfThrown(err: unknown): string | undefined {
  const errno = (err as { errno?: unknown } | null)?.errno;
  return typeof errno === 'number' ? errnoNames.get(errno) : undefined;
}
