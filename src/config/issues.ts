// Collecting configuration problems. A config file is checked completely before anything is
// reported, so the user fixes every mistake in one round instead of one per restart. Each problem
// is a path inside the file plus a sentence stating the observed value and the rule.
import { ErrorCodes, RelayError, type ErrorCode } from '../errors.js';

export type PathSegment = string | number;

export interface Issue {
  /** Rendered path inside the file, e.g. `grays[2].public_port`; empty for the whole file. */
  readonly path: string;
  readonly message: string;
  readonly code: ErrorCode;
  /** The path as segments, when known; used to find the line the issue is on. */
  readonly segments?: readonly PathSegment[];
  /** 1-based line in the file, when known. */
  line?: number;
}

const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `['grays', 2, 'public_port']` → `grays[2].public_port`; odd keys are quoted so they stay readable. */
export function formatPath(segments: readonly PathSegment[]): string {
  let out = '';
  for (const seg of segments) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (PLAIN_KEY.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

const SENSITIVE_KEYS = new Set(['secret', 'token']);

/** True when the value at this path must never appear in a message (it would end up in logs). */
export function isSensitivePath(segments: readonly PathSegment[]): boolean {
  const last = segments[segments.length - 1];
  return typeof last === 'string' && SENSITIVE_KEYS.has(last);
}

/** A short rendering of a YAML value for messages: JSON, cut at 80 characters. */
export function showValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/**
 * Accumulates issues for one file. A path reported by the schema validator is not reported again
 * by the normalizer (which re-checks some values more precisely), so each mistake appears once.
 */
export class IssueList {
  readonly items: Issue[] = [];
  private readonly seen = new Set<string>();

  add(segments: readonly PathSegment[] | string, message: string, code: ErrorCode = ErrorCodes.CONFIG_INVALID): void {
    const path = typeof segments === 'string' ? segments : formatPath(segments);
    if (this.seen.has(path)) return;
    this.addAlways(segments, message, code);
  }

  /** Adds an issue even if its path was already reported (different facts about the same key). */
  addAlways(segments: readonly PathSegment[] | string, message: string, code: ErrorCode = ErrorCodes.CONFIG_INVALID): void {
    const path = typeof segments === 'string' ? segments : formatPath(segments);
    this.seen.add(path);
    this.items.push(typeof segments === 'string' ? { path, message, code } : { path, message, code, segments: [...segments] });
  }

  has(segments: readonly PathSegment[] | string): boolean {
    return this.seen.has(typeof segments === 'string' ? segments : formatPath(segments));
  }

  get length(): number {
    return this.items.length;
  }
}

/** `white.yaml: grays[2].public_port: 20001 is already ...` */
export function renderIssue(label: string, issue: Issue): string {
  return issue.path === '' ? `${label}: ${issue.message}` : `${label}: ${issue.path}: ${issue.message}`;
}

/**
 * One error for all issues: the specific code when every issue is of one kind (so callers can
 * match on SECRET_WEAK, say), CONFIG_INVALID when they are mixed.
 */
export function issuesError(label: string, issues: readonly Issue[]): RelayError {
  const errors = issues.map((i) => renderIssue(label, i));
  const codes = new Set(issues.map((i) => i.code));
  const code: ErrorCode = codes.size === 1 ? [...codes][0]! : ErrorCodes.CONFIG_INVALID;
  return new RelayError(code, errors.join('\n'), {
    details: {
      file: label,
      errors,
      issues: issues.map((i) => ({ path: i.path, message: i.message, code: i.code, ...(i.line === undefined ? {} : { line: i.line }) })),
    },
  });
}

export function labelFor(path: string | null): string {
  return path ?? '<config>';
}
