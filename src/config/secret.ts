// Shared secrets: generation, decoding and the three ways a config may give one (inline, file,
// environment variable). A GitOps file meant to be public references file or env secrets.
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { open } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ErrorCodes, RelayError, isRelayError } from '../errors.js';
import type { IssueList, PathSegment } from './issues.js';
import { formatPath } from './issues.js';

/** Below 128 bits a secret is refused: the HMAC proofs would be brute-forceable offline. */
export const MIN_SECRET_BYTES = 16;
/** What generateSecret produces: 256 bits. */
export const SECRET_BYTES = 32;
/** A secret file is a few dozen bytes; refusing big ones avoids reading a wrong path (a log, a disk). */
const MAX_SECRET_FILE_BYTES = 4096;

/** 32 random bytes as base64url without padding (43 characters). */
export function generateSecret(): string {
  return randomBytes(SECRET_BYTES).toString('base64url');
}

// Either alphabet, optional padding. Mixing the two alphabets is refused: it is almost certainly a
// copy-paste accident, and Node's decoder would silently accept it.
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const BASE64 = /^[A-Za-z0-9+/]+$/;

/** Hook secrets (form 'webhook') may also be written as Standard Webhooks writes them. */
export type SecretForm = 'plain' | 'webhook';
export const WEBHOOK_SECRET_PREFIX = 'whsec_';

/**
 * Decodes a secret written as base64url (or standard base64; for a hook also whsec_<base64>)
 * and checks its strength.
 * `where` names the source in messages (e.g. `grays[0].secret`); the secret itself never appears.
 * Throws CONFIG_INVALID when the text is not base64, SECRET_WEAK when it is under 16 bytes.
 */
export function decodeSecret(text: string, where: string, form: SecretForm = 'plain'): Buffer {
  let trimmed = text.trim();
  // Standard Webhooks writes its signing keys as whsec_ and standard base64 of the key bytes.
  if (form === 'webhook' && trimmed.startsWith(WEBHOOK_SECRET_PREFIX)) trimmed = trimmed.slice(WEBHOOK_SECRET_PREFIX.length);
  const body = trimmed.replace(/={1,2}$/, '');
  const padded = body.length !== trimmed.length;
  const urlAlphabet = BASE64URL.test(body);
  const stdAlphabet = BASE64.test(body);
  if (body.length === 0) {
    throw new RelayError(ErrorCodes.SECRET_WEAK, `${where}: is empty, at least ${MIN_SECRET_BYTES} bytes (128 bits) required`, {
      details: { where, bytes: 0, minBytes: MIN_SECRET_BYTES },
    });
  }
  // A length of 4n+1 characters cannot come from any byte string; padding must complete a quad.
  if ((!urlAlphabet && !stdAlphabet) || body.length % 4 === 1 || (padded && trimmed.length % 4 !== 0)) {
    throw new RelayError(ErrorCodes.CONFIG_INVALID, `${where}: is not base64url (or base64) text`, { details: { where } });
  }
  const bytes = Buffer.from(body, urlAlphabet ? 'base64url' : 'base64');
  if (bytes.length < MIN_SECRET_BYTES) {
    throw new RelayError(
      ErrorCodes.SECRET_WEAK,
      `${where}: decodes to ${bytes.length} bytes, at least ${MIN_SECRET_BYTES} (${MIN_SECRET_BYTES * 8} bits) required`,
      { details: { where, bytes: bytes.length, minBytes: MIN_SECRET_BYTES } },
    );
  }
  return redacted(bytes);
}

/**
 * Makes a secret Buffer print as "[redacted]" through JSON.stringify (pino) and util.inspect
 * (console.log), so logging a whole config by accident does not leak it. Bytes are unchanged.
 */
export function redacted(bytes: Buffer): Buffer {
  Object.defineProperty(bytes, 'toJSON', { value: () => '[redacted]', enumerable: false });
  Object.defineProperty(bytes, inspect.custom, { value: () => `<secret ${bytes.length} bytes [redacted]>`, enumerable: false });
  return bytes;
}

export interface SecretSources {
  secret?: unknown;
  secret_file?: unknown;
  secret_env?: unknown;
}

export interface SecretContext {
  /** Folder relative secret_file paths are resolved against. */
  readonly baseDir: string;
  readonly env: NodeJS.ProcessEnv;
  /**
   * When true, problems that depend on where the check runs (an unset variable, a file this user
   * may not read) are not reported. relayctl uses it: the white's environment has them, the shell
   * running relayctl may not.
   */
  readonly lenientSources: boolean;
}

/**
 * Resolves the secret given by one of secret / secret_file / secret_env at `segments`.
 * Adds issues instead of throwing so every problem of a file is reported together; returns null
 * when there is no usable secret (also when none is given: the caller decides if one is required).
 */
export async function resolveSecret(
  source: SecretSources,
  segments: readonly PathSegment[],
  ctx: SecretContext,
  issues: IssueList,
  form: SecretForm = 'plain',
): Promise<Buffer | null> {
  const at = (key: string): PathSegment[] => [...segments, key];
  const decodeInto = (text: string, key: string): Buffer | null => {
    try {
      return decodeSecret(text, formatPath(at(key)), form);
    } catch (err) {
      if (!isRelayError(err)) throw err;
      // decodeSecret's message starts with the path; the issue list adds it itself.
      issues.add(at(key), err.message.slice(formatPath(at(key)).length + 2), err.code);
      return null;
    }
  };

  if (typeof source.secret === 'string') return decodeInto(source.secret, 'secret');

  if (typeof source.secret_env === 'string') {
    const name = source.secret_env;
    const value = ctx.env[name];
    if (value === undefined || value.trim() === '') {
      if (!ctx.lenientSources) {
        issues.add(at('secret_env'), `environment variable ${name} is ${value === undefined ? 'not set' : 'empty'}`, ErrorCodes.SECRET_SOURCE);
      }
      return null;
    }
    return decodeInto(value, 'secret_env');
  }

  if (typeof source.secret_file === 'string') {
    const file = isAbsolute(source.secret_file) ? source.secret_file : resolve(ctx.baseDir, source.secret_file);
    const text = await readSecretFile(file, at('secret_file'), ctx, issues);
    return text === null ? null : decodeInto(text, 'secret_file');
  }
  return null;
}

async function readSecretFile(file: string, segments: PathSegment[], ctx: SecretContext, issues: IssueList): Promise<string | null> {
  const fail = (message: string): null => {
    issues.add(segments, message, ErrorCodes.SECRET_SOURCE);
    return null;
  };
  let handle;
  try {
    // O_NOFOLLOW is not used: Kubernetes mounts secrets as symlinks. fstat after open checks the
    // very file that is read, not a path that could be swapped in between.
    handle = await open(file, fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return fail(`${file} does not exist`);
    if (code === 'EACCES' || code === 'EPERM') return ctx.lenientSources ? null : fail(`${file} cannot be read by this user (${code})`);
    return fail(`${file} cannot be read (${code ?? String(err)})`);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) return fail(`${file} is not a regular file`);
    // Windows has no Unix permission bits to check.
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      return fail(`${file} is accessible by group or others (mode ${mode}); allow only its owner: chmod 600 ${file}`);
    }
    if (st.size > MAX_SECRET_FILE_BYTES) return fail(`${file} is ${st.size} bytes, a secret file holds at most ${MAX_SECRET_FILE_BYTES}`);
    const text = (await handle.readFile({ encoding: 'utf8' })).trim();
    if (text === '') return fail(`${file} is empty`);
    return text;
  } finally {
    await handle.close();
  }
}
