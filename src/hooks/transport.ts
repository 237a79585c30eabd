// What webhooks and the authorize hook share: request signing, one small undici pool per hook
// origin, and a POST that never throws and never reads more than a capped response body.
import { createHmac } from 'node:crypto';
import type { Readable } from 'node:stream';
import { createRequire } from 'node:module';
import type { Pool } from 'undici';

// undici is loaded on first use, synchronously: a white with no hooks configured (the common
// case) never pays its ~5 MB.
let undiciPool: typeof Pool | null = null;
function PoolClass(): typeof Pool {
  undiciPool ??= (createRequire(import.meta.url)('undici') as typeof import('undici')).Pool;
  return undiciPool;
}
import { VERSION } from '../version.js';
import { Histogram } from '../engine/histogram.js';

export type HookKind = 'authorize' | 'webhook';

/** Seconds from sending a hook request to its outcome (an answer, a timeout or an error), by
 *  kind, for the whole process (metrics: relay_hook_request_duration_seconds). */
export const hookDurations: Readonly<Record<HookKind, Histogram>> = { authorize: new Histogram(), webhook: new Histogram() };

export const DEFAULT_USER_AGENT = `relay/${VERSION}`;

/**
 * The value of `webhook-signature` (Standard Webhooks): `v1,` and the base64 HMAC-SHA256, keyed
 * with the secret's bytes, over `id.timestamp.body`. The delivery id and the timestamp are inside
 * the MAC, so a captured request can neither be replayed later (receivers refuse stale
 * timestamps) nor passed off as another delivery (receivers deduplicate by id).
 */
export function computeSignature(secret: Buffer, timestamp: number, deliveryId: string, body: string): string {
  const mac = createHmac('sha256', secret);
  mac.update(`${deliveryId}.${timestamp}.`);
  mac.update(body);
  return `v1,${mac.digest('base64')}`;
}

/** Headers for one attempt; the timestamp is taken now, so each retry carries a fresh one. */
export function requestHeaders(opts: {
  deliveryId: string;
  body: string;
  secret: Buffer | null;
  userAgent: string;
  authorization: string | null;
  nowMs?: number;
}): Record<string, string> {
  const timestamp = Math.floor((opts.nowMs ?? Date.now()) / 1000);
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': opts.userAgent,
    'webhook-id': opts.deliveryId,
    'webhook-timestamp': String(timestamp),
  };
  if (opts.secret !== null) headers['webhook-signature'] = computeSignature(opts.secret, timestamp, opts.deliveryId, opts.body);
  if (opts.authorization !== null) headers.authorization = opts.authorization;
  return headers;
}

/** Milliseconds a Retry-After value asks to wait (delay-seconds or an HTTP date), or null when
 *  it is absent or unreadable. */
export function retryAfterMs(value: string | null, nowMs = Date.now()): number | null {
  if (value === null) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? null : Math.max(0, at - nowMs);
}

/** A hook URL split into what undici needs. Credentials in the URL become a Basic header, since
 *  undici does not apply them; `display` drops them so stats, logs and metrics never show them. */
export interface HookTarget {
  origin: string;
  path: string;
  display: string;
  authorization: string | null;
}

export function parseHookUrl(url: string): HookTarget {
  const u = new URL(url);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new TypeError(`hook url must be http or https, got ${u.protocol}`);
  }
  let authorization: string | null = null;
  if (u.username !== '' || u.password !== '') {
    const user = decodeURIComponent(u.username);
    const pass = decodeURIComponent(u.password);
    authorization = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
  }
  const display = new URL(u.href);
  display.username = '';
  display.password = '';
  return { origin: u.origin, path: `${u.pathname}${u.search}`, display: display.href, authorization };
}

export type PostOutcome =
  | {
      kind: 'response';
      status: number;
      /** What was read of the body, at most maxBytes. */
      body: Buffer;
      /** The body went past maxBytes and the connection was dropped. */
      truncated: boolean;
      /** The body did not arrive whole: null, 'timeout', or an error message. The status line
       *  had arrived, so the caller decides whether the body matters. */
      incomplete: string | null;
      /** The Retry-After header as sent, or null. */
      retryAfter: string | null;
    }
  | { kind: 'timeout' }
  | { kind: 'error'; message: string };

/**
 * One undici Pool per hook origin. Few connections: webhooks send one request at a time per hook
 * and the authorize hook is a small service on the side; keep-alive makes each later request
 * one round trip on an already open connection.
 */
export class HookClient {
  private readonly pool: Pool;
  private readonly duration: Histogram;
  private closing: Promise<void> | null = null;

  constructor(
    readonly origin: string,
    opts: { connections: number; connectTimeoutMs: number; kind: HookKind },
  ) {
    this.duration = hookDurations[opts.kind];
    this.pool = new (PoolClass())(origin, {
      connections: opts.connections,
      pipelining: 1,
      connect: { timeout: opts.connectTimeoutMs },
      // undici's default would drop an idle connection after 4 s; hooks are often quieter than
      // that, and servers announce their own limit in `keep-alive`, which undici honours.
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 60_000,
    });
  }

  /**
   * POST and read at most `maxBytes` of the answer. Never throws. The timeout covers everything:
   * waiting for a free connection, connecting, sending, the headers and the (capped) body.
   */
  async post(path: string, headers: Record<string, string>, body: string, timeoutMs: number, maxBytes: number, abort?: AbortSignal): Promise<PostOutcome> {
    const ac = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, timeoutMs);
    const onOuterAbort = (): void => ac.abort();
    abort?.addEventListener('abort', onOuterAbort, { once: true });
    const startedAt = performance.now();
    try {
      if (abort?.aborted) return { kind: 'error', message: 'aborted' };
      const res = await this.pool.request({
        path,
        method: 'POST',
        headers,
        body,
        signal: ac.signal,
        // A 3xx is an answer, not an instruction: following it could send signed events to a
        // host nobody configured.
        maxRedirections: 0,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      const { data, truncated, error } = await readCapped(res.body, maxBytes);
      const incomplete = error === null ? null : timedOut ? 'timeout' : describeError(error);
      const retryAfter = res.headers['retry-after'];
      return { kind: 'response', status: res.statusCode, body: data, truncated, incomplete, retryAfter: typeof retryAfter === 'string' ? retryAfter : null };
    } catch (err) {
      if (timedOut) return { kind: 'timeout' };
      return { kind: 'error', message: describeError(err) };
    } finally {
      clearTimeout(timer);
      abort?.removeEventListener('abort', onOuterAbort);
      this.duration.observe((performance.now() - startedAt) / 1000);
    }
  }

  /** Let requests in flight finish until the deadline, then cut them. */
  close(deadlineMs: number): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = (async () => {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<'deadline'>((resolve) => {
        timer = setTimeout(() => resolve('deadline'), Math.max(0, deadlineMs));
      });
      const closed = this.pool.close().then(() => 'closed' as const, () => 'closed' as const);
      const first = await Promise.race([closed, deadline]);
      clearTimeout(timer);
      if (first === 'deadline') await this.pool.destroy().catch(() => undefined);
    })();
    return this.closing;
  }

  /** Cut everything now (requests in flight fail with an error). */
  async destroy(): Promise<void> {
    await this.pool.destroy().catch(() => undefined);
  }
}

/**
 * Read a response body up to `maxBytes`. Past it the stream is destroyed, which makes undici drop
 * the connection instead of draining an answer of unbounded size from a misbehaving endpoint.
 * Never throws: a read error is returned with what had arrived before it.
 */
export async function readCapped(body: Readable, maxBytes: number): Promise<{ data: Buffer; truncated: boolean; error: unknown }> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      const room = maxBytes - total;
      if (chunk.length > room) {
        if (room > 0) chunks.push(chunk.subarray(0, room));
        total += Math.max(0, room);
        body.destroy();
        return { data: Buffer.concat(chunks, total), truncated: true, error: null };
      }
      chunks.push(chunk);
      total += chunk.length;
    }
  } catch (err) {
    body.destroy();
    return { data: Buffer.concat(chunks, total), truncated: false, error: err ?? new Error('body read failed') };
  }
  return { data: Buffer.concat(chunks, total), truncated: false, error: null };
}

export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return `${typeof code === 'string' ? `${code} ` : ''}${err.message}${cause}`;
  }
  return String(err);
}

/** A short, printable excerpt of a response body for `lastError` and logs. */
export function bodyExcerpt(body: Buffer, max = 200): string {
  const text = body.subarray(0, max * 4).toString('utf8').replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
