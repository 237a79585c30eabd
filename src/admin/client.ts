// The admin API's client (relayctl show, tests). undici over the Unix socket, or over the loopback
// TCP listener with its bearer token. Failures become RelayErrors a person can act on: nothing
// listening is ADMIN_UNREACHABLE ("the white is not running"), an answer that is not a success is
// ADMIN_REQUEST with the status and the server's own words.
import { Client } from 'undici';
import { ErrorCodes, RelayError } from '../errors.js';
import type { AdminState, ReloadOutcome } from './server.js';

export type AdminTarget = { readonly socket: string } | { readonly url: string; readonly token: string };

export interface AdminClientOptions {
  /** Connect plus answer; the white answers from memory, so a slow answer means trouble. */
  readonly timeoutMs?: number;
}

/** A state document is a few hundred bytes per gray; this is far above any real one. */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

export class AdminClient {
  private readonly client: Client;
  private readonly where: string;
  private readonly authorization: string | null;

  constructor(
    private readonly target: AdminTarget,
    options: AdminClientOptions = {},
  ) {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const common = { connectTimeout: timeoutMs, headersTimeout: timeoutMs, bodyTimeout: timeoutMs, pipelining: 1 };
    if ('socket' in target) {
      // The origin is only used for the Host header; the socket path decides where it goes.
      this.client = new Client('http://localhost', { ...common, socketPath: target.socket });
      this.where = `admin socket at ${target.socket}`;
      this.authorization = null;
    } else {
      this.client = new Client(target.url, common);
      this.where = `admin API at ${target.url}`;
      this.authorization = `Bearer ${target.token}`;
    }
  }

  async state(): Promise<AdminState> {
    const { status, body } = await this.request('GET', '/v1/state');
    if (status !== 200) throw this.failure('GET /v1/state', status, body);
    return parseJson(body, this.where) as AdminState;
  }

  async metrics(): Promise<string> {
    const { status, body } = await this.request('GET', '/metrics');
    if (status !== 200) throw this.failure('GET /metrics', status, body);
    return body;
  }

  /** Asks the white to reload its file now; resolves with the outcome whether it applied or not. */
  async reload(): Promise<ReloadOutcome> {
    const { status, body } = await this.request('POST', '/v1/reload');
    if (status !== 200 && status !== 422) throw this.failure('POST /v1/reload', status, body);
    return parseJson(body, this.where) as ReloadOutcome;
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  private async request(method: 'GET' | 'POST', path: string): Promise<{ status: number; body: string }> {
    let response;
    try {
      response = await this.client.request({
        method,
        path,
        headers: this.authorization === null ? {} : { authorization: this.authorization },
      });
    } catch (err) {
      throw this.unreachable(err);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > MAX_RESPONSE_BYTES) {
          response.body.destroy();
          throw new RelayError(ErrorCodes.ADMIN_REQUEST, `${method} ${path}: the answer from the ${this.where} is over ${MAX_RESPONSE_BYTES} bytes`);
        }
        chunks.push(chunk);
      }
    } catch (err) {
      if (err instanceof RelayError) throw err;
      throw this.unreachable(err);
    }
    return { status: response.statusCode, body: Buffer.concat(chunks).toString('utf8') };
  }

  private unreachable(err: unknown): RelayError {
    const code = (err as { code?: string }).code ?? '';
    const socket = 'socket' in this.target ? this.target.socket : null;
    let message: string;
    if (socket !== null && code === 'ENOENT') message = `the white is not running (no admin socket at ${socket})`;
    else if (socket !== null && code === 'ECONNREFUSED') message = `the white is not running (nothing answers on the admin socket at ${socket})`;
    else if (code === 'ECONNREFUSED') message = `the white is not running (nothing answers on the ${this.where})`;
    else if (code === 'EACCES' || code === 'EPERM') message = `permission denied on the ${this.where}; run relayctl as the user that runs the white`;
    else if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
      message = `the white did not answer in time on the ${this.where}`;
    } else message = `cannot reach the ${this.where} (${code || (err instanceof Error ? err.message : String(err))})`;
    return new RelayError(ErrorCodes.ADMIN_UNREACHABLE, message, { cause: err, details: { target: this.where, errno: code } });
  }

  private failure(what: string, status: number, body: string): RelayError {
    let said = body.trim();
    try {
      const parsed = JSON.parse(body) as { error?: unknown };
      if (typeof parsed.error === 'string') said = parsed.error;
    } catch {
      // not JSON: quote the text as it came
    }
    return new RelayError(ErrorCodes.ADMIN_REQUEST, `${what} on the ${this.where} answered ${status}: ${said.slice(0, 500)}`, {
      details: { status },
    });
  }
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new RelayError(ErrorCodes.ADMIN_REQUEST, `the ${where} answered with something that is not JSON`, { cause: err });
  }
}
