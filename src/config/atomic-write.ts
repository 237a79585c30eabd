// Replacing a file so that a reader (the white's watcher, a person, git) only ever sees the old or
// the new content: write a temp file in the same directory (rename is atomic only within one file
// system), flush it to disk, then rename it over the target and flush the directory entry.
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface AtomicWriteOptions {
  /** Permission bits for the new file (the old file's, when replacing one). */
  readonly mode?: number;
  /** Owner to keep; applied when permitted, ignored otherwise (only root may give files away). */
  readonly uid?: number;
  readonly gid?: number;
  /**
   * Last check before the rename; returning false abandons the write (the temp file is removed)
   * and writeFileAtomic resolves false. Edits use it to notice that someone else changed the file.
   */
  readonly beforeRename?: () => Promise<boolean>;
}

/** Resolves true when the file was replaced, false when beforeRename declined. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): Promise<boolean> {
  const dir = dirname(path);
  // Dot-prefixed and unique per writer: two writers never share a temp file, and tools that hide
  // dot files do not show it during the few milliseconds it exists.
  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const mode = opts.mode ?? 0o644;
  let renamed = false;
  try {
    const handle = await open(temp, 'wx', mode);
    try {
      await handle.writeFile(data);
      // open()'s mode is filtered by the umask; the copy must carry the original's bits exactly.
      await handle.chmod(mode);
      if (opts.uid !== undefined && opts.gid !== undefined) {
        await handle.chown(opts.uid, opts.gid).catch(() => {});
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (opts.beforeRename && !(await opts.beforeRename())) return false;
    await rename(temp, path);
    renamed = true;
    await syncDir(dir);
    return true;
  } finally {
    if (!renamed) await unlink(temp).catch(() => {});
  }
}

/** Makes the rename itself durable. Some platforms cannot fsync a directory; that is not an error. */
async function syncDir(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // EISDIR/EPERM/EINVAL on platforms without directory fsync (Windows): nothing more to do.
  } finally {
    await handle?.close();
  }
}
