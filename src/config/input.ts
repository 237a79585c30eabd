// A config as written: the keys of a white.yaml or gray.yaml (snake_case, host:port strings,
// secrets as text or where to find them), as a program builds it for the embedding API
// (src/api.ts). It goes through the same schema and checks as a file; these types only help an
// editor. The JSON Schemas in schema/ are the authority: docs/config.md explains every key.
import type { DEFAULT_LIMITS } from '../limits.js';
import type { EventName } from '../hooks/events.js';

/** `clientWaitMs` → `client_wait_ms`, at the type level. */
type SnakeCase<S extends string> = S extends `${infer Head}${infer Tail}` ? `${Head extends Lowercase<Head> ? Head : `_${Lowercase<Head>}`}${SnakeCase<Tail>}` : S;

/** Overrides of the built-in limits (src/limits.ts, docs/security.md); omitted keys keep their defaults. */
export type LimitsInput = { readonly [K in keyof typeof DEFAULT_LIMITS as SnakeCase<K>]?: number };

/** Where a secret comes from: inline base64url text of 16 or more bytes, a file, or an environment variable. */
export interface SecretInput {
  readonly secret?: string;
  readonly secret_file?: string;
  readonly secret_env?: string;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface WhiteGrayInput extends SecretInput {
  readonly id: string;
  readonly public_port: number;
  readonly data_port: number;
  readonly idle_timeout_ms?: number | null;
}

export interface HookInput extends SecretInput {
  readonly url: string;
  readonly events?: readonly EventName[];
  readonly timeout_ms?: number;
}

export interface AuthorizeInput extends SecretInput {
  readonly url: string;
  readonly timeout_ms?: number;
  readonly on_timeout?: 'allow' | 'deny';
  readonly gray_login?: boolean;
  readonly client_connect?: boolean;
}

/** A white config as written in white.yaml (schema/white.schema.json). */
export interface WhiteConfigInput {
  /** `listen`: host:port of the TLS control port; port 0 lets the OS choose. */
  readonly control: { readonly listen: string };
  readonly bind?: string;
  readonly admin?: { readonly socket?: string | null; readonly tcp?: { readonly listen: string; readonly token: string } | null };
  readonly ports?: { readonly range: string } | null;
  readonly data_source_check?: boolean;
  readonly client_keep_alive?: boolean;
  readonly log?: { readonly level?: LogLevel };
  readonly engine?: { readonly threads?: number };
  readonly watch?: { readonly polling?: boolean; readonly debounce_ms?: number };
  readonly metrics?: { readonly listen: string } | null;
  readonly dashboard?: { readonly listen?: string; readonly token?: string } | null;
  readonly hooks?: readonly HookInput[] | null;
  readonly authorize?: AuthorizeInput | null;
  readonly limits?: LimitsInput;
  readonly grays?: readonly WhiteGrayInput[] | null;
}

/** A gray config as written in gray.yaml (schema/gray.schema.json). */
export interface GrayConfigInput extends SecretInput {
  /** host:port of the white's control port, or a list of whites. */
  readonly white: string | readonly string[];
  readonly data_host?: string;
  readonly resolve_interval_ms?: number;
  readonly id: string;
  /** host:port of the service the gray forwards clients to. */
  readonly target: string;
  readonly pool?: number;
  readonly proxy_protocol?: 'none' | 'v1' | 'v2';
  readonly status?: { readonly listen: string } | null;
  readonly log?: { readonly level?: LogLevel };
  readonly engine?: { readonly threads?: number };
  readonly limits?: LimitsInput;
}
