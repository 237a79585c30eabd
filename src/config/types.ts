// The normalized, frozen shape of configuration that the engine consumes. The YAML keys are
// snake_case (schema/); these are the camelCase results of load → validate → normalize → freeze.
import type { Limits } from '../limits.js';
import type { Cidr } from '../engine/protocol/cidr.js';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** One of a gray's services on the white: its public port and who may connect to it. */
export interface WhiteService {
  readonly name: string;
  readonly publicPort: number;
  /** Client source networks allowed; empty: everyone. */
  readonly allow: readonly Cidr[];
}

export interface GrayEntry {
  readonly id: string;
  /** Decoded secret bytes (at least 16). Never logged. */
  readonly secret: Buffer;
  /** At least one; in the file's order, which is the order the white names them at login. */
  readonly services: readonly WhiteService[];
  readonly dataPort: number;
  /** No byte either way for this long ends a client's pair with a reset; null (or absent): never. */
  readonly idleTimeoutMs?: number | null;
}

export interface HookConfig {
  readonly url: string;
  /** Event names this hook wants; empty means all. */
  readonly events: readonly string[];
  readonly secret: Buffer | null;
  readonly timeoutMs: number;
}

export interface AuthorizeHookConfig {
  readonly url: string;
  readonly secret: Buffer | null;
  readonly timeoutMs: number;
  /** What to do when the authorize hook does not answer in time. */
  readonly onTimeout: 'allow' | 'deny';
  /** Which decisions go through it. */
  readonly grayLogin: boolean;
  readonly clientConnect: boolean;
}

export interface WhiteConfig {
  /** Absolute path of the file this came from, or null for configs built in code (demo, tests). */
  readonly path: string | null;
  readonly control: HostPort;
  /** Address the per-gray public and data listeners bind to. */
  readonly bind: string;
  readonly admin: {
    /** Unix socket path (mode 0600), or null to disable. */
    readonly socket: string | null;
    /** Optional loopback TCP admin listener; requests carry a single-use HMAC under the token (admin-auth.ts). */
    readonly tcp: (HostPort & { readonly token: string }) | null;
  };
  /** Range that `relayctl add` allocates ports from, inclusive. */
  readonly portsRange: { readonly from: number; readonly to: number } | null;
  /** Require data connections to come from the control connection's IP. */
  readonly dataSourceCheck: boolean;
  /** TCP keepalive on public-port client sockets (limits.clientKeepAliveDelayMs). */
  readonly clientKeepAlive: boolean;
  readonly grays: readonly GrayEntry[];
  readonly hooks: readonly HookConfig[];
  readonly authorize: AuthorizeHookConfig | null;
  readonly metrics: HostPort | null;
  /** Optional read-only status page (src/dashboard/); a token is required off loopback. */
  readonly dashboard: (HostPort & { readonly token: string | null }) | null;
  readonly log: { readonly level: string };
  /** engine.threads: how many engine threads (null: one per core, at most 16); read at startup. */
  readonly engine: { readonly threads: number | null };
  readonly watch: { readonly polling: boolean; readonly debounceMs: number };
  readonly limits: Readonly<Limits>;
}

export type ProxyProtocol = 'none' | 'v1' | 'v2';

/** One of the gray's services: where its clients are forwarded to. */
export interface GrayService {
  readonly name: string;
  readonly target: HostPort;
  readonly proxyProtocol: ProxyProtocol;
}

export interface GrayConfig {
  readonly path: string | null;
  /** The whites' control addresses (at least one); the gray keeps a session with each, and
   *  with each address a host name resolves to. */
  readonly whites: readonly HostPort[];
  /** Host to open data connections to, for a single white; null: the address each control
   *  session reached. */
  readonly dataHost: string | null;
  /** How often white host names are resolved again. */
  readonly resolveIntervalMs: number;
  readonly id: string;
  readonly secret: Buffer;
  /** At least one. */
  readonly services: readonly GrayService[];
  readonly pool: number;
  /** The status listener (/healthz, /readyz, /metrics), or null. */
  readonly status: HostPort | null;
  readonly log: { readonly level: string };
  /** engine.threads: how many engine threads (null: one per core, at most 16); read at startup. */
  readonly engine: { readonly threads: number | null };
  readonly limits: Readonly<Limits>;
}

/**
 * Per-host settings given on `relay white`'s command line, so several whites can run from one
 * shared file. Each replaces the file's key before validation, on every load and reload.
 */
export interface WhiteOverrides {
  /** `bind`. */
  readonly bind?: string;
  /** `control.listen`, host:port. */
  readonly controlListen?: string;
  /** `admin.socket`, an absolute path. */
  readonly adminSocket?: string;
  /** `metrics.listen`, host:port. */
  readonly metricsListen?: string;
}
