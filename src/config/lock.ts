// A lock file next to the config (`<file>.lock`, created with O_EXCL) so that two relayctl
// processes editing the same file take turns. The lock is advisory: editors and git do not know
// it, which is why edits also re-check the file just before replacing it (edit.ts).
import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { ErrorCodes, RelayError } from '../errors.js';

export interface LockOptions {
  /** A lock older than this is from a crashed or hung process and is broken. */
  readonly staleMs?: number;
  /** Give up waiting after this long (CONCURRENT_EDIT). */
  readonly timeoutMs?: number;
}

const DEFAULT_STALE_MS = 10_000;
const DEFAULT_TIMEOUT_MS = 15_000;

// Callers in one process queue here first, so they do not poll the file system against each other.
const inProcess = new Map<string, Promise<unknown>>();

export async function withFileLock<T>(target: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const previous = inProcess.get(target) ?? Promise.resolve();
  const run = previous.catch(() => {}).then(() => withLockFile(target, fn, opts));
  const tail = run.catch(() => {});
  inProcess.set(target, tail);
  try {
    return await run;
  } finally {
    if (inProcess.get(target) === tail) inProcess.delete(target);
  }
}

interface LockOwner {
  pid: number;
  host: string;
  at: number;
}

async function withLockFile<T>(target: string, fn: () => Promise<T>, opts: LockOptions): Promise<T> {
  const lockPath = `${target}.lock`;
  const staleMs = opts.staleMs ?? DEFAULT_STALE_MS;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const started = Date.now();
  let delay = 5;
  for (;;) {
    try {
      const handle = await open(lockPath, 'wx', 0o600);
      try {
        const owner: LockOwner = { pid: process.pid, host: hostname(), at: Date.now() };
        await handle.writeFile(JSON.stringify(owner));
      } finally {
        await handle.close();
      }
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') {
        throw new RelayError(ErrorCodes.INTERNAL, `${lockPath}: cannot create the lock file (${code ?? String(err)})`, { cause: err });
      }
    }
    if (await breakIfStale(lockPath, staleMs)) continue;
    if (Date.now() - started > timeoutMs) {
      const owner = await readOwner(lockPath);
      throw new RelayError(
        ErrorCodes.CONCURRENT_EDIT,
        `${target}: another edit holds ${lockPath}${owner ? ` (pid ${owner.pid} on ${owner.host})` : ''}; waited ${timeoutMs} ms`,
        { details: { file: target, lock: lockPath, waitedMs: timeoutMs } },
      );
    }
    // Jittered backoff so waiting processes do not retry in lockstep.
    await new Promise((r) => setTimeout(r, delay + Math.random() * delay));
    delay = Math.min(delay * 2, 200);
  }
  try {
    return await fn();
  } finally {
    await unlink(lockPath).catch(() => {});
  }
}

async function readOwner(lockPath: string): Promise<LockOwner | null> {
  try {
    const parsed = JSON.parse(await readFile(lockPath, 'utf8')) as Partial<LockOwner>;
    return typeof parsed.pid === 'number' && typeof parsed.host === 'string' ? { pid: parsed.pid, host: parsed.host, at: parsed.at ?? 0 } : null;
  } catch {
    return null;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A lock is stale when it is older than staleMs, or when its owner on this host has exited.
 * Breaking it renames it away first: of several processes that all judged it stale, only one
 * rename succeeds, so only one of them goes on to remove it.
 */
async function breakIfStale(lockPath: string, staleMs: number): Promise<boolean> {
  let st;
  try {
    st = await stat(lockPath);
  } catch {
    return true; // gone already: try to take it
  }
  const owner = await readOwner(lockPath);
  const deadOwner = owner !== null && owner.host === hostname() && owner.pid !== process.pid && !processAlive(owner.pid);
  // A lock file without a readable owner may be in the middle of being written; only age breaks it.
  if (!deadOwner && Date.now() - st.mtimeMs < staleMs) return false;
  const aside = `${lockPath}.stale.${process.pid}.${randomBytes(4).toString('hex')}`;
  try {
    await rename(lockPath, aside);
  } catch {
    return true; // someone else broke it first
  }
  // Between our stat and our rename another process may have broken the stale lock and taken a
  // fresh one; then we just moved a live lock. Put it back (link fails rather than overwrite if
  // yet another lock appeared; the edit's content re-check still guards that rare case).
  const moved = await stat(aside).catch(() => null);
  if (moved !== null && moved.ino !== st.ino) await link(aside, lockPath).catch(() => {});
  await unlink(aside).catch(() => {});
  return true;
}
