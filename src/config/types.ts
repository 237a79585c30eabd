// The normalized, frozen shape of configuration that the engine consumes. The YAML keys are
// snake_case (schema/); these are the camelCase results of load → validate → normalize → freeze.
import type { Limits } from '../limits.js';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface GrayEntry {
  readonly id: string;
  /** Decoded secret bytes (at least 16). Never logged. */
  readonly secret: Buffer;
  readonly publicPort: number;
  readonly dataPort: number;
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
    /** Optional loopback TCP admin listener; requires a bearer token. */
    readonly tcp: (HostPort & { readonly token: string }) | null;
  };
  /** Range that `relayctl add` allocates ports from, inclusive. */
  readonly portsRange: { readonly from: number; readonly to: number } | null;
  /** Require data connections to come from the control connection's IP. */
  readonly dataSourceCheck: boolean;
  readonly grays: readonly GrayEntry[];
  readonly hooks: readonly HookConfig[];
  readonly authorize: AuthorizeHookConfig | null;
  readonly metrics: HostPort | null;
  readonly log: { readonly level: string };
  readonly watch: { readonly polling: boolean; readonly debounceMs: number };
  readonly limits: Readonly<Limits>;
}

export type ProxyProtocol = 'none' | 'v1' | 'v2';

export interface GrayConfig {
  readonly path: string | null;
  /** The white's control address. */
  readonly white: HostPort;
  /** Host to open data connections to; defaults to the control host. */
  readonly dataHost: string;
  readonly id: string;
  readonly secret: Buffer;
  readonly target: HostPort;
  readonly pool: number;
  readonly proxyProtocol: ProxyProtocol;
  /** The status listener (/healthz, /readyz, /metrics), or null. */
  readonly status: HostPort | null;
  readonly log: { readonly level: string };
  readonly limits: Readonly<Limits>;
}
