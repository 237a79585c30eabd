// Noticing that the config file changed, whatever way it was changed:
// - in-place write (echo >>, some editors);
// - temp file + rename over it (relayctl, most editors, git checkout);
// - delete and recreate (some editors);
// - Kubernetes ConfigMap: `white.yaml -> ..data/white.yaml`, `..data -> ..2024_01_01_...`, and an
//   update renames a new `..data` symlink over the old one, then deletes the old directory.
//
// Watching the file itself breaks on all but the first (the watched inode goes away), so the
// watcher watches the *directories* involved (the file's folder, the folder of every symlink on the
// way to the real file, and the real file's folder), and treats any event there as "maybe".
// After a quiet period (debounce) it compares a fingerprint of what the path now resolves to
// (real path, inode, size, mtime, ctime) with the last one and calls onChange only if it differs.
// So unrelated files in the folder, lock and temp files, or a touch with no change cost a stat
// and nothing else; a burst of saves gives one call.
//
// The reload side validates fully, so a call for a half-written file is harmless: the load fails,
// the running config stays, and the final write's event brings another call.
import { lstat, readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { watch as chokidarWatch, type FSWatcher } from 'chokidar';

export interface WatchOptions {
  readonly polling: boolean;
  /** Quiet time after the last event before the file is looked at. */
  readonly debounceMs: number;
  readonly onChange: () => void;
  /** Watcher errors (a watched folder vanished...); they never stop the watching. */
  readonly onError?: (err: unknown) => void;
  /**
   * A plain stat of the file this often, as a safety net for file systems whose notifications
   * are unreliable (network mounts, some containers). 0 disables it. Default 5000.
   */
  readonly safetyIntervalMs?: number;
  /** Polling interval when `polling` is true. Default 500. */
  readonly pollIntervalMs?: number;
}

export interface ConfigWatcher {
  /** Resolves once the initial state is recorded and the OS watches are in place. */
  readonly ready: Promise<void>;
  close(): Promise<void>;
}

interface Chain {
  /** Absolute paths whose changes matter: the path, symlinks on the way, the real file. */
  readonly relevant: Set<string>;
  /** Folders to watch: the parents of every relevant path. */
  readonly dirs: Set<string>;
  readonly real: string | null;
}

/**
 * Follows `file` to the real file, noting each symlink on the way and each symlinked folder that
 * sits next to a link (the `..data` of a ConfigMap). System-level links above the config's folder
 * (/tmp → /private/tmp) are resolved once and not watched.
 */
async function resolveChain(file: string): Promise<Chain> {
  const abs = resolve(file);
  const baseDir = await realpath(dirname(abs)).catch(() => dirname(abs));
  let cur = join(baseDir, basename(abs));
  const relevant = new Set<string>([cur]);
  let real: string | null = null;
  for (let hops = 0; hops < 40; hops++) {
    const st = await lstat(cur).catch(() => null);
    if (st === null) break;
    if (!st.isSymbolicLink()) {
      real = cur;
      break;
    }
    relevant.add(cur);
    const target = await readlink(cur).catch(() => null);
    if (target === null) break;
    const next = resolve(dirname(cur), target);
    const rel = relative(dirname(cur), dirname(next));
    if (rel !== '' && rel !== '..' && !rel.startsWith(`..${sep}`)) {
      let p = dirname(cur);
      for (const part of rel.split(sep)) {
        p = join(p, part);
        const pst = await lstat(p).catch(() => null);
        if (pst?.isSymbolicLink()) relevant.add(p);
      }
    }
    const nextDir = await realpath(dirname(next)).catch(() => null);
    if (nextDir === null) break;
    cur = join(nextDir, basename(next));
  }
  if (real !== null) relevant.add(real);
  const dirs = new Set([...relevant].map((p) => dirname(p)));
  return { relevant, dirs, real };
}

async function fingerprint(chain: Chain): Promise<string | null> {
  if (chain.real === null) return null;
  const st = await stat(chain.real, { bigint: true }).catch(() => null);
  if (st === null || !st.isFile()) return null;
  return `${chain.real}|${st.dev}|${st.ino}|${st.size}|${st.mtimeNs}|${st.ctimeNs}`;
}

export function watchConfigFile(path: string, opts: WatchOptions): ConfigWatcher {
  const debounceMs = Math.max(0, opts.debounceMs);
  // A file that is written continuously would otherwise never go quiet; look at least this often.
  const maxWaitMs = Math.max(1000, debounceMs * 5);
  const onError = opts.onError ?? (() => {});
  let closed = false;
  let chain: Chain = { relevant: new Set(), dirs: new Set(), real: null };
  let last: string | null = null;
  let timer: NodeJS.Timeout | null = null;
  let firstPendingAt = 0;
  let checking: Promise<void> | null = null;
  let checkAgain = false;
  let watcher: FSWatcher | null = null;
  let safety: NodeJS.Timeout | null = null;

  const isWatched = (p: string): boolean => chain.dirs.has(p) || chain.relevant.has(p);

  const trigger = (): void => {
    if (closed) return;
    const now = Date.now();
    if (timer === null) firstPendingAt = now;
    else clearTimeout(timer);
    const wait = Math.min(debounceMs, Math.max(0, firstPendingAt + maxWaitMs - now));
    timer = setTimeout(() => {
      timer = null;
      void check();
    }, wait);
  };

  const check = async (): Promise<void> => {
    if (checking) {
      checkAgain = true;
      return checking;
    }
    checking = (async () => {
      do {
        checkAgain = false;
        const next = await resolveChain(path);
        updateWatchedDirs(next);
        const fp = await fingerprint(next);
        // A missing file (mid delete+recreate, or deleted for good) is not a change to report:
        // the reload would only fail; the file's return is.
        if (!closed && fp !== null && fp !== last) {
          last = fp;
          try {
            opts.onChange();
          } catch (err) {
            onError(err);
          }
        }
      } while (checkAgain && !closed);
    })().finally(() => {
      checking = null;
    });
    return checking;
  };

  const updateWatchedDirs = (next: Chain): void => {
    const before = chain.dirs;
    chain = next;
    if (watcher === null || closed) return;
    const add = [...next.dirs].filter((d) => !before.has(d));
    const drop = [...before].filter((d) => !next.dirs.has(d));
    if (add.length > 0) watcher.add(add);
    if (drop.length > 0) watcher.unwatch(drop);
  };

  const ready = (async () => {
    chain = await resolveChain(path);
    last = await fingerprint(chain);
    if (closed) return;
    const w = chokidarWatch([...chain.dirs], {
      ignoreInitial: true,
      depth: 0,
      // The chain is followed here, not by chokidar: it would watch the target instead of the
      // link and miss the link being replaced.
      followSymlinks: false,
      usePolling: opts.polling,
      interval: opts.pollIntervalMs ?? 500,
      binaryInterval: opts.pollIntervalMs ?? 500,
      ignorePermissionErrors: true,
      // Siblings of the config (other files, a socket, lock and temp files) are not watched;
      // the folders themselves are, which is where renames and link swaps show up.
      ignored: (p: string) => !isWatched(p),
    });
    watcher = w;
    w.on('all', trigger);
    // Raw events include renames onto an existing name (the ConfigMap swap), which chokidar may
    // not turn into an event because the name existed before and after.
    w.on('raw', trigger);
    w.on('error', (err) => onError(err));
    await new Promise<void>((r) => w.once('ready', () => r()));
    const safetyMs = opts.safetyIntervalMs ?? 5000;
    if (safetyMs > 0 && !closed) {
      safety = setInterval(() => void check(), safetyMs);
      safety.unref();
    }
  })();
  ready.catch(onError);

  return {
    ready,
    async close(): Promise<void> {
      closed = true;
      if (timer !== null) clearTimeout(timer);
      if (safety !== null) clearInterval(safety);
      await ready.catch(() => {});
      await watcher?.close();
      await checking?.catch(() => {});
    },
  };
}
