// Secrets written inline in a config file are only as private as the file. A `secret_file` that
// group or others can read is refused (secret.ts); a config file holding an inline secret is the
// same exposure, so `relay white`, `relay gray`, `relay verify` and `relayctl add` say so, naming
// the file, its mode and the keys. A warning and not a refusal: the file may be in a folder nobody
// else can enter, which the file's own mode does not show.
import { stat } from 'node:fs/promises';
import { formatPath, isSensitivePath, type PathSegment } from './issues.js';

/** Paths of the inline secrets in a parsed config (`grays[1].secret`, `admin.tcp.token`). */
export function inlineSecretPaths(data: unknown): string[] {
  const found: string[] = [];
  const walk = (value: unknown, at: PathSegment[]): void => {
    if (typeof value === 'string' && at.length > 0 && isSensitivePath(at)) found.push(formatPath(at));
    else if (Array.isArray(value)) value.forEach((v, i) => walk(v, [...at, i]));
    else if (typeof value === 'object' && value !== null) for (const [k, v] of Object.entries(value)) walk(v, [...at, k]);
  };
  walk(data, []);
  return found;
}

/** The warning for `path` when it holds inline secrets (`paths`) and group or others may read it; else null. */
export async function secretExposureWarning(path: string, paths: readonly string[]): Promise<string | null> {
  if (paths.length === 0 || process.platform === 'win32') return null;
  const st = await stat(path).catch(() => null);
  if (st === null || (st.mode & 0o044) === 0) return null;
  const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
  const who = (st.mode & 0o004) !== 0 ? 'everyone' : 'its group';
  const keys = paths.length > 3 ? `${paths.slice(0, 3).join(', ')} and ${paths.length - 3} more` : paths.join(', ');
  return `${path} holds inline secrets (${keys}) and ${who} can read it (mode ${mode}): chmod 600 ${path}, or move them to secret_file / secret_env`;
}
