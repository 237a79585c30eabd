// Entry points: read → YAML parse → schema validation (with defaults) → normalize → deep freeze.
// Any problem anywhere aborts the load with one RelayError listing all of them, so a reload either
// yields a complete, checked config or nothing.
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ErrorCodes, RelayError, isRelayError } from '../errors.js';
import { inlineSecretPaths, secretExposureWarning } from './exposure.js';
import { deepFreeze } from './freeze.js';
import { IssueList, issuesError, labelFor, renderIssue, type Issue } from './issues.js';
import { normalizeGray, normalizeWhite } from './normalize.js';
import { validateAgainstSchema } from './schema.js';
import type { GrayConfigInput, WhiteConfigInput } from './input.js';
import type { GrayConfig, WhiteConfig, WhiteOverrides } from './types.js';
import { MAX_CONFIG_BYTES, offsetOfPath, parseYaml } from './yaml.js';

export interface ParseOptions {
  /** Environment for secret_env lookups; process.env by default. */
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Skip secret_env / secret_file problems that depend on who runs the check (unset variable,
   * unreadable file). For relayctl, whose shell is not the white's environment. Default false.
   */
  readonly lenientSecretSources?: boolean;
  /** When given (with a path), warnings about the file are pushed here: inline secrets others can read. */
  readonly warnings?: string[];
  /** White only: command-line values that replace the file's keys (see WhiteOverrides). */
  readonly overrides?: WhiteOverrides;
  /**
   * Listening addresses (control, admin TCP, metrics, dashboard, a gray's status) and a gray's
   * public and data ports may have port 0: the OS chooses, and the program reads the port back
   * from the running white's state. On by default for configs built from an object, off for
   * files (nothing outside the process could learn the port).
   */
  readonly listenPortZero?: boolean;
}

/** Where each override lands in the file's data, and the flag that set it (for messages). */
const OVERRIDE_KEYS: ReadonlyArray<{ key: keyof WhiteOverrides; path: readonly string[]; flag: string }> = [
  { key: 'bind', path: ['bind'], flag: '--bind' },
  { key: 'controlListen', path: ['control', 'listen'], flag: '--control-listen' },
  { key: 'adminSocket', path: ['admin', 'socket'], flag: '--admin-socket' },
  { key: 'metricsListen', path: ['metrics', 'listen'], flag: '--metrics-listen' },
];

/** Puts the overrides into the parsed file, creating the enclosing mappings; returns the paths set. */
function applyOverrides(data: Record<string, unknown>, overrides: WhiteOverrides): Array<{ path: string; flag: string }> {
  const set: Array<{ path: string; flag: string }> = [];
  for (const { key, path, flag } of OVERRIDE_KEYS) {
    const value = overrides[key];
    if (value === undefined) continue;
    let cur = data;
    for (const seg of path.slice(0, -1)) {
      const next = cur[seg];
      if (typeof next !== 'object' || next === null || Array.isArray(next)) cur[seg] = {};
      cur = cur[seg] as Record<string, unknown>;
    }
    cur[path[path.length - 1]!] = value;
    set.push({ path: path.join('.'), flag });
  }
  return set;
}

/** Reads a config file as UTF-8 text; CONFIG_READ with the OS reason when it cannot. */
export async function readConfigText(path: string): Promise<string> {
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new RelayError(ErrorCodes.CONFIG_READ, `${path}: is not a regular file`, { details: { file: path } });
    if (st.size > MAX_CONFIG_BYTES) {
      throw new RelayError(ErrorCodes.CONFIG_READ, `${path}: is ${st.size} bytes, a config file may have at most ${MAX_CONFIG_BYTES}`, {
        details: { file: path, bytes: st.size, maxBytes: MAX_CONFIG_BYTES },
      });
    }
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isRelayError(err)) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    const reason = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'cannot be read by this user (EACCES)' : `cannot be read (${code})`;
    throw new RelayError(ErrorCodes.CONFIG_READ, `${path}: ${reason}`, { cause: err, details: { file: path, errno: code } });
  }
}

type Kind = 'white' | 'gray';

/** Parse + validate + normalize; returns the issues instead of throwing when there are any. */
async function check(kind: Kind, text: string, path: string | null, opts: ParseOptions): Promise<{ config: WhiteConfig | GrayConfig | null; issues: IssueList }> {
  const parsed = parseYaml(text);
  if (parsed.issues.length > 0) return { config: null, issues: parsed.issues };
  return checkData(kind, parsed.data, parsed, path, opts);
}

/** Validate + normalize data already parsed (from a file, with its document for line numbers; or built in a program). */
async function checkData(
  kind: Kind,
  data: unknown,
  parsed: Pick<ReturnType<typeof parseYaml>, 'doc' | 'lines'> | null,
  path: string | null,
  opts: ParseOptions,
): Promise<{ config: WhiteConfig | GrayConfig | null; issues: IssueList }> {
  const issues = new IssueList();
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    const found = data === null || data === undefined ? 'nothing' : Array.isArray(data) ? 'a list' : `a ${typeof data}`;
    issues.add('', `the file must be a YAML mapping of keys to values, found ${found}`);
    return { config: null, issues };
  }
  if (opts.warnings !== undefined && path !== null) {
    const warning = await secretExposureWarning(path, inlineSecretPaths(data));
    if (warning !== null) opts.warnings.push(warning);
  }
  const overridden = kind === 'white' && opts.overrides ? applyOverrides(data as Record<string, unknown>, opts.overrides) : [];
  validateAgainstSchema(kind, data, issues, opts.listenPortZero ?? false);
  const ctx = {
    path: path === null ? null : resolve(path),
    issues,
    env: opts.env ?? process.env,
    lenientSecretSources: opts.lenientSecretSources ?? false,
    listenPortZero: opts.listenPortZero ?? false,
  };
  const raw = data as Record<string, unknown>;
  const config = kind === 'white' ? await normalizeWhite(raw, ctx) : await normalizeGray(raw, ctx);
  if (overridden.length > 0) {
    // The value a person must fix is on the command line, not in the file.
    issues.items.forEach((issue, i) => {
      const from = overridden.find((o) => issue.path === o.path || issue.path.startsWith(`${o.path}.`));
      if (from) issues.items[i] = { ...issue, message: `${issue.message} (set by ${from.flag})`, segments: [] };
      // A clash found at another key names the overridden one in parentheses.
      for (const o of overridden) {
        const named = issues.items[i]!;
        if (named.message.includes(`(${o.path})`)) issues.items[i] = { ...named, message: named.message.replace(`(${o.path})`, `(${o.path}, set by ${o.flag})`) };
      }
    });
  }
  if (issues.length > 0) {
    // Schema and normalizer findings interleave; file order is the order a person fixes them in.
    if (parsed === null) return { config: null, issues };
    const doc = parsed.doc;
    const offsets = new Map<Issue, number>();
    issues.items.forEach((issue, i) => {
      const offset = doc !== null && issue.segments ? offsetOfPath(doc, issue.segments) : undefined;
      if (offset !== undefined) issue.line = parsed.lines.linePos(offset).line;
      // Ties (same node) keep the order found; the fraction never reaches the next offset.
      offsets.set(issue, (offset ?? -1) + i / (issues.items.length + 1));
    });
    issues.items.sort((a, b) => offsets.get(a)! - offsets.get(b)!);
    return { config: null, issues };
  }
  const checked = deepFreeze(config);
  CHECKED.set(checked, kind);
  return { config: checked, issues };
}

/** Configs that came out of a loader here, so a caller can tell them from an object still to check. */
const CHECKED = new WeakMap<object, Kind>();

/** Which kind of config a loader here returned this as (checked, normalized, frozen); null: none did. */
export function checkedKind(value: unknown): Kind | null {
  return typeof value === 'object' && value !== null ? (CHECKED.get(value) ?? null) : null;
}

async function parseAs<T extends WhiteConfig | GrayConfig>(kind: Kind, text: string, path: string | null, opts: ParseOptions): Promise<T> {
  const { config, issues } = await check(kind, text, path, opts);
  if (config === null) throw issuesError(labelFor(path), issues.items);
  return config as T;
}

/** `path` is used for messages and to resolve relative paths; null resolves them against the cwd. */
export function parseWhiteConfig(text: string, path: string | null, opts: ParseOptions = {}): Promise<WhiteConfig> {
  return parseAs<WhiteConfig>('white', text, path, opts);
}

export function parseGrayConfig(text: string, path: string | null, opts: ParseOptions = {}): Promise<GrayConfig> {
  return parseAs<GrayConfig>('gray', text, path, opts);
}

export async function loadWhiteConfig(path: string, opts: ParseOptions = {}): Promise<WhiteConfig> {
  return parseWhiteConfig(await readConfigText(path), path, opts);
}

export async function loadGrayConfig(path: string, opts: ParseOptions = {}): Promise<GrayConfig> {
  return parseGrayConfig(await readConfigText(path), path, opts);
}

/**
 * A config built in a program with the keys of a file (src/config/input.ts): the same schema,
 * defaults and checks as a file. Relative paths (secret_file, admin.socket) resolve against the
 * current directory. The object given is not changed.
 */
export async function whiteConfigFromObject(data: WhiteConfigInput, opts: ParseOptions = {}): Promise<WhiteConfig> {
  return fromObject<WhiteConfig>('white', data, opts);
}

export async function grayConfigFromObject(data: GrayConfigInput, opts: ParseOptions = {}): Promise<GrayConfig> {
  return fromObject<GrayConfig>('gray', data, opts);
}

async function fromObject<T extends WhiteConfig | GrayConfig>(kind: Kind, data: unknown, opts: ParseOptions): Promise<T> {
  let copy: unknown;
  try {
    // Validation fills in defaults and overrides replace keys: on a copy, never on the caller's object.
    copy = structuredClone(data);
  } catch (err) {
    throw new RelayError(ErrorCodes.CONFIG_INVALID, `${kind} config object: holds something other than plain data (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }
  const { config, issues } = await checkData(kind, copy, null, null, { listenPortZero: true, ...opts });
  if (config === null) throw issuesError(`${kind} config object`, issues.items);
  return config as T;
}

/** A white config has `grays` or `control`; anything else is taken for a gray config. */
export function detectKind(data: unknown): Kind {
  if (typeof data === 'object' && data !== null && !Array.isArray(data) && ('grays' in data || 'control' in data)) return 'white';
  return 'gray';
}

export type VerifyResult = { ok: true; kind: Kind } | { ok: false; kind?: Kind; errors: string[] };

/** For `relay verify` / CI on a GitOps repository: the full check, reported instead of thrown. */
export async function verifyConfigFile(path: string, opts: ParseOptions = {}): Promise<VerifyResult> {
  let text: string;
  try {
    text = await readConfigText(path);
  } catch (err) {
    return { ok: false, errors: [isRelayError(err) ? err.message : String(err)] };
  }
  const label = labelFor(path);
  const parsed = parseYaml(text);
  if (parsed.issues.length > 0) return { ok: false, errors: parsed.issues.items.map((i) => renderIssue(label, i)) };
  const kind = detectKind(parsed.data);
  const { issues } = await check(kind, text, path, opts);
  if (issues.length > 0) return { ok: false, kind, errors: issues.items.map((i) => renderIssue(label, i)) };
  return { ok: true, kind };
}
