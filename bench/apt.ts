// Finding the third-party tools a workload needs and, when they are missing, installing their
// Debian packages with apt-get (update once, then install), so that `npm run bench` on a fresh
// Debian or Ubuntu machine measures everything without a manual step. A tool named by an
// explicit path (--wrk /opt/wrk) is never installed: the user chose it, and a missing one is
// reported as missing.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface Tool {
  /** What the user gave: a bare name (looked up, installed if missing) or a path (used as is). */
  bin: string;
  /** The Debian package that provides it. */
  pkg: string;
  /** Directories searched after PATH (nginx lives in /usr/sbin, which a non-root PATH lacks). */
  extraDirs?: readonly string[];
}

/** The executable `bin` resolves to, or null. */
export function findTool(t: Tool): string | null {
  if (t.bin.includes('/')) return isExecutable(t.bin) ? path.resolve(t.bin) : null;
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), ...(t.extraDirs ?? [])];
  for (const d of dirs) {
    const p = path.join(d, t.bin);
    if (isExecutable(p)) return p;
  }
  return null;
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

export type Found = { ok: true; paths: string[]; installed: string[] } | { ok: false; reason: string };

/** apt-get waits this long for another apt or dpkg to release its lock (several runs share a machine). */
const LOCK_WAIT_S = 120;
/** Each apt-get step is bounded in time. */
const STEP_TIMEOUT_MS = 10 * 60_000;

/**
 * Paths of all tools, in order, installing the packages of the missing ones with apt-get.
 * `log` hears what is being done (an install takes a while).
 */
export function findOrInstall(tools: readonly Tool[], log: (line: string) => void): Found {
  const missing = tools.filter((t) => findTool(t) === null);
  const explicit = missing.filter((t) => t.bin.includes('/'));
  if (explicit.length > 0) return { ok: false, reason: `not found: ${explicit.map((t) => t.bin).join(', ')}` };
  const installed: string[] = [];
  if (missing.length > 0) {
    const pkgs = [...new Set(missing.map((t) => t.pkg))];
    const manual = `install them with: apt-get update && apt-get install -y ${pkgs.join(' ')}`;
    if (findTool({ bin: 'apt-get', pkg: 'apt' }) === null) {
      return { ok: false, reason: `${missing.map((t) => t.bin).join(' and ')} not found and apt-get is not available; ${manual}` };
    }
    log(`${missing.map((t) => t.bin).join(' and ')} not found: installing ${pkgs.join(' ')} (apt-get update, then apt-get install)`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const lock = ['-o', `DPkg::Lock::Timeout=${LOCK_WAIT_S}`];
    for (const args of [['-qq', ...lock, 'update'], ['-y', '-qq', ...lock, 'install', ...pkgs]]) {
      const r = spawnSync('apt-get', args, { encoding: 'utf8', env, timeout: STEP_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'pipe'] });
      if (r.error || r.status !== 0) {
        const why = r.error ? r.error.message : `exit status ${r.status}`;
        const said = `${r.stderr ?? ''}\n${r.stdout ?? ''}`.split('\n').map((l) => l.trim()).filter(Boolean).slice(-3).join(' | ');
        return { ok: false, reason: `${missing.map((t) => t.bin).join(' and ')} not found, and apt-get ${args.includes('update') ? 'update' : 'install'} failed (${why}${said ? `: ${said}` : ''}); ${manual}` };
      }
    }
    installed.push(...pkgs);
  }
  const paths: string[] = [];
  for (const t of tools) {
    const p = findTool(t);
    if (p === null) return { ok: false, reason: `${t.bin} still not found after installing ${t.pkg}` };
    paths.push(p);
  }
  return { ok: true, paths, installed };
}
