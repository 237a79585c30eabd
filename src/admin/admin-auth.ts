// How relayctl and the white's admin TCP listener authenticate each other without the token ever
// crossing the wire. Anyone on the host can listen on a loopback port the white is not holding
// (a stopped white, a restart), so the client must not send anything replayable before the
// listener has shown it knows the token:
//
//   1. client → POST /v1/challenge with `relay-admin-nonce: <32 random bytes>` (nothing secret);
//   2. white  → { nonce: <32 random bytes, single use, 10 s>, proof: HMAC(token, server label,
//               client nonce, white nonce) }; the client checks the proof before going on;
//   3. client → the request with `authorization: Relay-Admin nonce=<white nonce>, mac=<HMAC(token,
//               request label, white nonce, method, path)>`; the white accepts each nonce once.
//
// An impostor never gets a proof it can check nor a mac it can use: it cannot make step 2's proof,
// so the client stops there; a mac is bound to a nonce the real white issued and consumes.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** The header of the challenge request, carrying the client's nonce. */
export const CLIENT_NONCE_HEADER = 'relay-admin-nonce';
export const AUTH_SCHEME = 'Relay-Admin';
const NONCE_BYTES = 32;
const SERVER_PROOF_LABEL = 'relay admin v1 white proof';
const REQUEST_LABEL = 'relay admin v1 request';

export const MIN_TOKEN_CHARS = 32;
export const MAX_TOKEN_CHARS = 1024;

/**
 * Why `token` cannot be the admin token, or null when it can. Visible ASCII only: a space, a tab
 * or a line break in a token is a copy-paste accident, and people pass tokens through shells and
 * environment variables. The config validation and the admin server both use this function, so a
 * token that validates is a token the server accepts.
 */
export function adminTokenProblem(token: string): string | null {
  if (token.length < MIN_TOKEN_CHARS) return `the value is ${token.length} characters long, at least ${MIN_TOKEN_CHARS} required`;
  if (token.length > MAX_TOKEN_CHARS) return `the value is ${token.length} characters long, at most ${MAX_TOKEN_CHARS} allowed`;
  const bad = /[^!-~]/.exec(token);
  if (bad !== null) {
    const c = bad[0];
    const what = c === ' ' ? 'a space' : c === '\t' ? 'a tab' : c === '\n' || c === '\r' ? 'a line break' : `the character U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
    return `has ${what} at position ${bad.index + 1}; a token is visible ASCII characters only (no spaces, tabs or line breaks)`;
  }
  return null;
}

export function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString('base64url');
}

/** A nonce as this scheme makes them: 32 bytes, base64url without padding. */
export function isNonce(text: unknown): text is string {
  return typeof text === 'string' && /^[A-Za-z0-9_-]{43}$/.test(text);
}

function mac(token: string, ...parts: string[]): Buffer {
  // NUL never occurs in any part (nonces are base64url, methods and paths are HTTP tokens), so
  // the encoding is unambiguous.
  return createHmac('sha256', token).update(parts.join('\0'), 'utf8').digest();
}

/** Step 2: the white's proof that it holds the token, bound to both nonces. */
export function serverProof(token: string, clientNonce: string, serverNonce: string): string {
  return mac(token, SERVER_PROOF_LABEL, clientNonce, serverNonce).toString('base64url');
}

export function checkServerProof(token: string, clientNonce: string, serverNonce: string, proof: unknown): boolean {
  return typeof proof === 'string' && sameBase64url(proof, mac(token, SERVER_PROOF_LABEL, clientNonce, serverNonce));
}

/** Step 3: the Authorization header of one request. */
export function requestAuthorization(token: string, serverNonce: string, method: string, path: string): string {
  return `${AUTH_SCHEME} nonce=${serverNonce}, mac=${mac(token, REQUEST_LABEL, serverNonce, method, path).toString('base64url')}`;
}

/** The nonce and mac of an Authorization header in this scheme, or null. */
export function parseAuthorization(header: string | undefined): { nonce: string; mac: string } | null {
  const m = /^Relay-Admin nonce=([A-Za-z0-9_-]{43}), mac=([A-Za-z0-9_-]{43})$/.exec(header ?? '');
  return m === null ? null : { nonce: m[1]!, mac: m[2]! };
}

export function checkRequestMac(token: string, serverNonce: string, method: string, path: string, given: string): boolean {
  return sameBase64url(given, mac(token, REQUEST_LABEL, serverNonce, method, path));
}

function sameBase64url(text: string, expected: Buffer): boolean {
  const got = Buffer.from(text, 'base64url');
  return got.length === expected.length && timingSafeEqual(got, expected);
}

/**
 * The white's nonces handed out and not used yet: each is accepted once, within `ttlMs`. At most
 * `max` are kept; past it the oldest is forgotten (its client gets a 401 and asks again), so a
 * local user asking for challenges in a loop costs bounded memory and locks nobody out for long.
 */
export class IssuedNonces {
  /** Insertion order is issue order, so the first key is the oldest. */
  private readonly expiry = new Map<string, number>();

  constructor(
    private readonly max: number,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  issue(): string {
    const nonce = newNonce();
    while (this.expiry.size >= this.max) this.expiry.delete(this.expiry.keys().next().value!);
    this.expiry.set(nonce, this.now() + this.ttlMs);
    return nonce;
  }

  /** True when `nonce` was issued, is unexpired and unused; it is used from here on either way. */
  take(nonce: string): boolean {
    const until = this.expiry.get(nonce);
    if (until === undefined) return false;
    this.expiry.delete(nonce);
    return this.now() <= until;
  }

  get size(): number {
    return this.expiry.size;
  }
}
