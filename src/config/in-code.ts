// Configs built in code rather than read from a file: the demo and tests. Loopback, port 0 (the
// OS chooses), no admin socket, no hooks; callers override what they need. Files go through
// load.ts instead, which is where validation lives.
import { resolveLimits, type Limits } from '../limits.js';
import type { GrayConfig, GrayEntry, WhiteConfig } from './types.js';

export function whiteConfigInCode(grays: readonly GrayEntry[], limits: Partial<Limits> = {}, extra: Partial<WhiteConfig> = {}): WhiteConfig {
  return {
    path: null,
    control: { host: '127.0.0.1', port: 0 },
    bind: '127.0.0.1',
    admin: { socket: null, tcp: null },
    portsRange: null,
    dataSourceCheck: true,
    clientKeepAlive: true,
    grays,
    hooks: [],
    authorize: null,
    metrics: null,
    dashboard: null,
    log: { level: 'warn' },
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
  extra: Partial<GrayConfig> = {},
  limits: Partial<Limits> = {},
): GrayConfig {
  return {
    path: null,
    whites: [{ host: '127.0.0.1', port: controlPort }],
    dataHost: null,
    resolveIntervalMs: 30_000,
    id,
    secret,
    target: { host: '127.0.0.1', port: targetPort },
    pool: 4,
    proxyProtocol: 'none',
    status: null,
    log: { level: 'warn' },
    limits: resolveLimits(limits),
    ...extra,
  };
}
