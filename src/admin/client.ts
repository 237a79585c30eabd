// The admin API's client (relayctl show and reload, tests), over the Unix socket or the loopback
// TCP listener. Every call ends, within a stated time, with a checked answer or a RelayError a
// person can act on: nothing listening, or a listener that closes, stalls, or does not prove it
// knows the token, is ADMIN_UNREACHABLE; an answer that is not a success, or not the document
// asked for, is ADMIN_REQUEST with what came back. Over TCP the token never crosses the wire
// (admin-auth.ts): the listener proves it holds it before anything replayable is sent.
import http from 'node:http';
import { ErrorCodes, RelayError } from '../errors.js';
import { checkServerProof, CLIENT_NONCE_HEADER, newNonce, requestAuthorization } from './admin-auth.js';
import { ADMIN_LIMITS, type AdminState, type ReloadOutcome } from './server.js';

export type AdminTarget = { readonly socket: string } | { readonly url: string; readonly token: string };

export interface AdminClientOptions {
  /** Bound of one call from connect to last byte (a TCP call's challenge included). */
  readonly timeoutMs?: number;
  /** The same for reload, which waits for the white to load and apply its file. */
  readonly reloadTimeoutMs?: number;
}

/** The white answers from memory, so a slow answer means trouble. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** The white answers 503 to a handler past its own deadline; this leaves room for that answer. */
export const DEFAULT_RELOAD_TIMEOUT_MS = ADMIN_LIMITS.handlerTimeoutMs + 5_000;

/** A state document is a few hundred bytes per gray; this is far above any real one. */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

interface Answer {
  readonly status: number;
  readonly body: string;
}

export class AdminClient {
  private readonly where: string;
  private readonly timeoutMs: number;
  private readonly reloadTimeoutMs: number;
  private readonly endpoint: { socketPath: string } | { host: string; port: number };

  constructor(
    private readonly target: AdminTarget,
    options: AdminClientOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.reloadTimeoutMs = options.reloadTimeoutMs ?? DEFAULT_RELOAD_TIMEOUT_MS;
    if ('socket' in target) {
      this.endpoint = { socketPath: target.socket };
      this.where = `admin socket at ${target.socket}`;
    } else {
      const url = new URL(target.url);
      this.endpoint = { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port || 80) };
      this.where = `admin API at ${url.host}`;
    }
  }

  async state(): Promise<AdminState> {
    const { status, body } = await this.call('GET', '/v1/state', this.timeoutMs);
    if (status !== 200) throw this.failure('GET /v1/state', status, body);
    const state = this.json(body, 'GET /v1/state');
    if (!isAdminState(state)) throw this.notTheDocument('GET /v1/state', 'a state document', body);
    return state;
  }

  async metrics(): Promise<string> {
    const { status, body } = await this.call('GET', '/metrics', this.timeoutMs);
    if (status !== 200) throw this.failure('GET /metrics', status, body);
    return body;
  }

  /** Asks the white to reload its file now; resolves with the outcome whether it applied or not. */
  async reload(): Promise<ReloadOutcome> {
    const { status, body } = await this.call('POST', '/v1/reload', this.reloadTimeoutMs);
    if (status !== 200 && status !== 422) throw this.failure('POST /v1/reload', status, body);
    const outcome = this.json(body, 'POST /v1/reload');
    if (!isReloadOutcome(outcome) || outcome.ok !== (status === 200)) throw this.notTheDocument('POST /v1/reload', 'a reload outcome', body);
    return outcome;
  }

  /** Nothing is kept open between calls; kept so callers need not know. */
  async close(): Promise<void> {}

  /** One call within `timeoutMs`: over TCP the challenge first, then the request. */
  private async call(method: 'GET' | 'POST', path: string, timeoutMs: number): Promise<Answer> {
    const deadline = Date.now() + timeoutMs;
    if ('socket' in this.target) return this.exchange(method, path, {}, deadline, timeoutMs);
    const token = this.target.token;
    const clientNonce = newNonce();
    const asked = await this.exchange('POST', '/v1/challenge', { [CLIENT_NONCE_HEADER]: clientNonce }, deadline, timeoutMs);
    const challenge = asked.status === 200 ? (this.json(asked.body, 'POST /v1/challenge', true) as { nonce?: unknown; proof?: unknown }) : null;
    const nonce = challenge?.nonce;
    if (challenge === null || typeof nonce !== 'string' || !checkServerProof(token, clientNonce, nonce, challenge.proof)) {
      // Nothing replayable has been sent yet: the client nonce is all this listener has seen.
      throw new RelayError(
        ErrorCodes.ADMIN_UNREACHABLE,
        `the listener on the ${this.where} did not prove it knows admin.tcp.token: it is not this white (or its token differs); nothing was sent to it`,
        { details: { target: this.where, status: asked.status } },
      );
    }
    return this.exchange(method, path, { authorization: requestAuthorization(token, nonce, method, path) }, deadline, timeoutMs);
  }

  private exchange(method: string, path: string, headers: Record<string, string>, deadline: number, timeoutMs: number): Promise<Answer> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const fail = (err: RelayError): void =>
        settle(() => {
          req.destroy();
          reject(err);
        });
      // A referenced timer: until the call ends, the process has something to wait for, so it
      // can never just run out of work and exit as if all were well.
      const timer = setTimeout(
        () => fail(this.unreachable(`the white did not answer within ${formatSeconds(timeoutMs)} on the ${this.where}`, 'ETIMEDOUT')),
        Math.max(0, deadline - Date.now()),
      );
      const req = http.request({ ...this.endpoint, method, path, agent: false, headers: { ...headers, host: 'relay-admin', connection: 'close' } });
      req.on('error', (err: NodeJS.ErrnoException) => fail(this.fromSocketError(err)));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            fail(new RelayError(ErrorCodes.ADMIN_REQUEST, `${method} ${path}: the answer from the ${this.where} is over ${MAX_RESPONSE_BYTES} bytes`));
          } else chunks.push(chunk);
        });
        // A connection that ends before the declared length is a cut answer, not a short one:
        // the answer is complete only at 'end'; an error or a close before it is a failure.
        const cut = (err?: Error): void => fail(this.unreachable(`the ${this.where} closed the connection in the middle of its answer`, 'ECONNRESET', err));
        res.on('error', cut);
        res.on('close', () => cut());
        res.on('end', () => {
          if (!res.complete) return cut();
          settle(() => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        });
      });
      req.end();
    });
  }

  private fromSocketError(err: NodeJS.ErrnoException): RelayError {
    const code = err.code ?? '';
    const socket = 'socket' in this.target ? this.target.socket : null;
    let message: string;
    if (socket !== null && code === 'ENOENT') message = `the white is not running (no admin socket at ${socket})`;
    else if (socket !== null && code === 'ECONNREFUSED') message = `the white is not running (nothing answers on the admin socket at ${socket})`;
    else if (code === 'ECONNREFUSED') message = `the white is not running (nothing answers on the ${this.where})`;
    else if (code === 'EACCES' || code === 'EPERM') message = `permission denied on the ${this.where}; run relayctl as the user that runs the white`;
    else if (code === 'ECONNRESET' || code === 'EPIPE') {
      // What a white past its connection limit does (ADMIN_LIMITS.maxConnections), among others.
      message = `the ${this.where} closed the connection without answering (too many admin connections at once, or not the white)`;
    } else if (code.startsWith('HPE_')) message = `the ${this.where} answered with something that is not HTTP (${code})`;
    else message = `cannot reach the ${this.where} (${code || err.message})`;
    return this.unreachable(message, code, err);
  }

  private unreachable(message: string, errno: string, cause?: unknown): RelayError {
    return new RelayError(ErrorCodes.ADMIN_UNREACHABLE, message, { cause, details: { target: this.where, errno } });
  }

  private failure(what: string, status: number, body: string): RelayError {
    let said = body.trim();
    try {
      const parsed = JSON.parse(body) as { error?: unknown };
      if (typeof parsed.error === 'string') said = parsed.error;
    } catch {
      // not JSON: quote the text as it came
    }
    return new RelayError(ErrorCodes.ADMIN_REQUEST, `${what} on the ${this.where} answered ${status}: ${said.slice(0, 500) || '(an empty body)'}`, {
      details: { status },
    });
  }

  private json(text: string, what: string, lenient = false): unknown {
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      if (lenient) return null;
      throw new RelayError(ErrorCodes.ADMIN_REQUEST, `${what}: the ${this.where} answered with something that is not JSON: ${quote(text)}`, { cause: err });
    }
  }

  private notTheDocument(what: string, expected: string, body: string): RelayError {
    return new RelayError(ErrorCodes.ADMIN_REQUEST, `${what}: the ${this.where} answered with JSON that is not ${expected}: ${quote(body)}`);
  }
}

function quote(text: string): string {
  const t = text.trim();
  return t === '' ? '(an empty body)' : JSON.stringify(t.length > 200 ? `${t.slice(0, 200)}…` : t);
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isStrOrNull = (v: unknown): boolean => v === null || typeof v === 'string';
const isNumOrNull = (v: unknown): boolean => v === null || isNum(v);

/** Every field `relayctl show` reads, with its type: a white of another version or an impostor is caught here. */
export function isAdminState(v: unknown): v is AdminState {
  if (!isObject(v) || typeof v.version !== 'string' || !isStrOrNull(v.configPath) || !isNum(v.startedAt)) return false;
  const c = v.counters;
  if (!isObject(c) || !isNum(c.authFailures) || !isObject(c.reloads) || !isNum(c.reloads.ok) || !isNum(c.reloads.rejected)) return false;
  if (!(c.lastReload === null || (isObject(c.lastReload) && isNum(c.lastReload.at) && typeof c.lastReload.ok === 'boolean' && isStrOrNull(c.lastReload.error)))) {
    return false;
  }
  if (!Array.isArray(v.hooks) || !Array.isArray(v.grays)) return false;
  const hookOk = (h: unknown): boolean =>
    isObject(h) && typeof h.url === 'string' && isNum(h.delivered) && isNum(h.failed) && isNum(h.dropped) && isNum(h.queued) && isStrOrNull(h.lastError);
  const grayOk = (g: unknown): boolean =>
    isObject(g) &&
    typeof g.id === 'string' &&
    isNum(g.publicPort) &&
    isNum(g.dataPort) &&
    typeof g.connected === 'boolean' &&
    isNumOrNull(g.connectedSince) &&
    isStrOrNull(g.remoteAddress) &&
    ['poolIdle', 'poolTarget', 'activeClients', 'pendingClients', 'bytesFromClients', 'bytesToClients'].every((k) => isNum(g[k])) &&
    isStrOrNull(g.lastError);
  return v.hooks.every(hookOk) && v.grays.every(grayOk);
}

function isReloadOutcome(v: unknown): v is ReloadOutcome {
  return isObject(v) && typeof v.ok === 'boolean' && isNum(v.at) && isStrOrNull(v.error);
}
