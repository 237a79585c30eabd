// The authorize hook: an HTTP endpoint that gates gray logins and/or client connections. Unlike
// webhooks, the engine waits for its answer, so it must be fast (keep-alive pool, one request per
// decision), bounded (timeout from the config, capped response) and must always produce a decision:
// decide() never throws. Anything but a clear, well-formed answer denies, except a timeout, which
// follows the operator's `on_timeout` choice (availability vs. strictness is theirs to pick).
import { randomUUID } from 'node:crypto';
import type { AuthorizeHookConfig } from '../config/types.js';
import { ErrorCodes } from '../errors.js';
import { DEFAULT_LIMITS } from '../limits.js';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../rate-limited-log.js';
import {
  DEFAULT_USER_AGENT,
  HookClient,
  bodyExcerpt,
  parseHookUrl,
  requestHeaders,
  type HookTarget,
} from './transport.js';

export type AuthorizeKind = 'gray_login' | 'client_connect';

export interface AuthorizeRequest {
  kind: AuthorizeKind;
  grayId: string;
  /** gray_login: the gray's address; client_connect: the Internet client's address. */
  remoteAddress: string;
  /** client_connect: the id the engine gives this client connection (same as in client.* events). */
  connectionId?: string;
  /** gray_login: the control session id, when the engine has assigned one. */
  sessionId?: string;
}

export interface AuthorizeDecision {
  allow: boolean;
  /** Human-readable, at most REASON_MAX_CHARS; safe to log. */
  reason: string;
  /** Where the decision came from: the hook's answer, the on_timeout rule, a failure (deny), or no hook. */
  source: 'hook' | 'timeout' | 'error' | 'disabled';
}

export interface AuthorizerOptions {
  /** Response bytes read before the answer is refused and the connection dropped. */
  responseMaxBytes?: number;
  /** Connections kept open to the hook; decisions beyond that wait for a free one (within the timeout). */
  connections?: number;
  userAgent?: string;
  warnIntervalMs?: number;
}

export const REASON_MAX_CHARS = 256;

/** The JSON body the authorize hook receives. snake_case like the YAML config. */
export interface AuthorizeBody {
  id: string;
  time: string;
  kind: AuthorizeKind;
  gray_id: string;
  remote_address: string;
  connection_id?: string;
  session_id?: string;
}

export class Authorizer {
  private cfg: AuthorizeHookConfig | null;
  private target: HookTarget | null = null;
  private client: HookClient | null = null;
  private readonly logger: Logger;
  private readonly options: AuthorizerOptions;
  private readonly failWarn: RateLimitedLog;

  constructor(cfg: AuthorizeHookConfig | null, logger: Logger, options: AuthorizerOptions = {}) {
    this.cfg = null;
    this.logger = logger.child({ hook: 'authorize' });
    this.options = options;
    this.failWarn = new RateLimitedLog(this.logger, options.warnIntervalMs ?? 10_000);
    this.update(cfg);
  }

  /** Cheap check the engine makes before every decision. */
  enabled(kind: AuthorizeKind): boolean {
    const cfg = this.cfg;
    if (cfg === null) return false;
    return kind === 'gray_login' ? cfg.grayLogin : cfg.clientConnect;
  }

  /** Config reload: the pool is kept when the origin is the same, so open connections stay warm. */
  update(cfg: AuthorizeHookConfig | null): void {
    const oldClient = this.client;
    let target: HookTarget | null = null;
    if (cfg !== null) {
      try {
        target = parseHookUrl(cfg.url);
      } catch (err) {
        // Fail closed: a configured gate that cannot be reached must not silently open, so the
        // config stays (enabled() stays true) and decide() denies.
        this.logger.error({ err }, 'authorize hook url invalid; every gated decision will be denied');
      }
    }
    this.cfg = cfg;
    this.target = target;
    if (target === null || cfg === null) {
      this.client = null;
    } else if (!oldClient || oldClient.origin !== target.origin) {
      this.client = new HookClient(target.origin, {
        connections: this.options.connections ?? 8,
        connectTimeoutMs: cfg.timeoutMs > 0 ? cfg.timeoutMs : DEFAULT_LIMITS.hookTimeoutMs,
        kind: 'authorize',
      });
    }
    if (oldClient && oldClient !== this.client) void oldClient.close(1_000);
  }

  /** Ask the hook. Never throws; always resolves within the configured timeout (plus a tick). */
  async decide(request: AuthorizeRequest): Promise<AuthorizeDecision> {
    const cfg = this.cfg;
    const target = this.target;
    const client = this.client;
    if (cfg === null) return { allow: true, reason: 'no authorize hook configured', source: 'disabled' };
    if (client === null || target === null) {
      return { allow: false, reason: 'authorize hook unavailable (invalid url, or closed)', source: 'error' };
    }
    const id = randomUUID();
    const payload: AuthorizeBody = {
      id,
      time: new Date().toISOString(),
      kind: request.kind,
      gray_id: request.grayId,
      remote_address: request.remoteAddress,
      ...(request.connectionId !== undefined ? { connection_id: request.connectionId } : {}),
      ...(request.sessionId !== undefined ? { session_id: request.sessionId } : {}),
    };
    const body = JSON.stringify(payload);
    const headers = requestHeaders({
      deliveryId: id,
      body,
      secret: cfg.secret,
      userAgent: this.options.userAgent ?? DEFAULT_USER_AGENT,
      authorization: target.authorization,
    });
    const timeoutMs = cfg.timeoutMs > 0 ? cfg.timeoutMs : DEFAULT_LIMITS.hookTimeoutMs;
    const maxBytes = this.options.responseMaxBytes ?? DEFAULT_LIMITS.hookResponseMaxBytes;
    const out = await client.post(target.path, headers, body, timeoutMs, maxBytes);

    let decision: AuthorizeDecision;
    switch (out.kind) {
      case 'timeout':
        decision = {
          allow: cfg.onTimeout === 'allow',
          reason: `authorize hook did not answer within ${timeoutMs} ms (on_timeout: ${cfg.onTimeout})`,
          source: 'timeout',
        };
        break;
      case 'error':
        decision = { allow: false, reason: `authorize hook unreachable: ${out.message}`, source: 'error' };
        break;
      case 'response':
        if (out.incomplete === 'timeout' && out.status >= 200 && out.status < 300) {
          // The answer started but did not finish in time: that is still a timeout.
          decision = {
            allow: cfg.onTimeout === 'allow',
            reason: `authorize hook did not finish its answer within ${timeoutMs} ms (on_timeout: ${cfg.onTimeout})`,
            source: 'timeout',
          };
        } else if (out.incomplete !== null && !out.truncated && out.status >= 200 && out.status < 300) {
          decision = { allow: false, reason: `authorize hook answer cut short: ${out.incomplete}`, source: 'error' };
        } else {
          decision = interpret(out.status, out.body, out.truncated, maxBytes);
        }
        break;
    }
    if (decision.source !== 'hook') {
      this.failWarn.warn('failWarn', { kind: request.kind, gray: request.grayId, allow: decision.allow, reason: decision.reason, code: ErrorCodes.HOOK_DELIVERY }, 'authorize hook failed; fallback decision applied');
    } else {
      this.logger.debug({ kind: request.kind, gray: request.grayId, remote: request.remoteAddress, allow: decision.allow, reason: decision.reason }, 'authorize decision');
    }
    return decision;
  }

  /** Close the keep-alive connections. decide() after close() denies. */
  async close(deadlineMs = 1_000): Promise<void> {
    const client = this.client;
    this.client = null;
    this.target = null;
    if (client) await client.close(deadlineMs);
  }
}

/** Turn an HTTP answer into a decision. Only a 2xx with `{"allow": <boolean>}` is an answer. */
function interpret(status: number, raw: Buffer, truncated: boolean, maxBytes: number): AuthorizeDecision {
  if (status < 200 || status >= 300) {
    const excerpt = bodyExcerpt(raw, 100);
    return { allow: false, reason: `authorize hook answered HTTP ${status}${excerpt ? `: ${excerpt}` : ''}`, source: 'error' };
  }
  if (truncated) {
    return { allow: false, reason: `authorize hook answer larger than ${maxBytes} bytes`, source: 'error' };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch {
    return { allow: false, reason: 'authorize hook answer is not JSON', source: 'error' };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return { allow: false, reason: 'authorize hook answer is not a JSON object', source: 'error' };
  }
  const { allow, reason } = parsed as { allow?: unknown; reason?: unknown };
  if (typeof allow !== 'boolean') {
    // "allow": "false" or 1 must not be guessed at: a gate that misreads its answer is no gate.
    return { allow: false, reason: 'authorize hook answer has no boolean "allow"', source: 'error' };
  }
  const text = typeof reason === 'string' && reason.trim() !== '' ? cleanReason(reason) : allow ? 'allowed by authorize hook' : 'denied by authorize hook';
  return { allow, reason: text, source: 'hook' };
}

function cleanReason(reason: string): string {
  // The reason ends up in logs and may be shown to the peer: keep it one bounded line.
  const oneLine = reason.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return oneLine.length > REASON_MAX_CHARS ? `${oneLine.slice(0, REASON_MAX_CHARS)}…` : oneLine;
}
