// Configs built in code rather than read from a file: the demo and tests. Loopback, port 0 (the
// OS chooses), no admin socket, no hooks; callers override what they need. Files go through
// load.ts instead, which is where validation lives.
import { resolveLimits, type Limits } from '../limits.js';
import { DEFAULT_SERVICE } from './services.js';
import type { GrayConfig, GrayEntry, GrayService, HostPort, ProxyProtocol, WhiteConfig } from './types.js';

/** A gray entry in code: its services, or one public port for the service `default`. */
export type GrayEntryInCode = Omit<GrayEntry, 'services'> & ({ readonly services: GrayEntry['services'] } | { readonly publicPort: number });

export function grayEntryInCode(g: GrayEntryInCode): GrayEntry {
  if ('services' in g) return g;
  const { publicPort, ...rest } = g;
  return { ...rest, services: [{ name: DEFAULT_SERVICE, publicPort, allow: [] }] };
}

export function whiteConfigInCode(grays: readonly GrayEntryInCode[], limits: Partial<Limits> = {}, extra: Partial<WhiteConfig> = {}): WhiteConfig {
  return {
    path: null,
    control: { host: '127.0.0.1', port: 0 },
    bind: '127.0.0.1',
    admin: { socket: null, tcp: null },
    portsRange: null,
    dataSourceCheck: true,
    clientKeepAlive: true,
    grays: grays.map(grayEntryInCode),
    hooks: [],
    authorize: null,
    metrics: null,
    dashboard: null,
    log: { level: 'warn' },
    engine: { threads: null },
    watch: { polling: false, debounceMs: 200 },
    limits: resolveLimits(limits),
    ...extra,
  };
}

export function grayConfigInCode(
  id: string,
  secret: Buffer,
  controlPort: number,
  targetPort: number,
  extra: Partial<GrayConfig> & { readonly proxyProtocol?: ProxyProtocol; readonly target?: HostPort } = {},
  limits: Partial<Limits> = {},
): GrayConfig {
  // The single-service form: target and proxyProtocol make the service "default".
  const { proxyProtocol, target, ...rest } = extra;
  const services: GrayService[] = [{ name: DEFAULT_SERVICE, target: target ?? { host: '127.0.0.1', port: targetPort }, proxyProtocol: proxyProtocol ?? 'none' }];
  return {
    path: null,
    whites: [{ host: '127.0.0.1', port: controlPort }],
    dataHost: null,
    resolveIntervalMs: 30_000,
    id,
    secret,
    services,
    pool: 4,
    status: null,
    log: { level: 'warn' },
    engine: { threads: null },
    limits: resolveLimits(limits),
    ...rest,
  };
}
