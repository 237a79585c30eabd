// YAML text → plain data, strictly: one document, no duplicate keys, no unknown tags. A duplicate
// key is refused rather than "last one wins": in a registry of authorized agents a second `secret:`
// silently overriding the first is exactly the kind of mistake a review would miss.
import { Document, LineCounter, isMap, isScalar, isSeq, parseDocument, type Node } from 'yaml';
import { ErrorCodes } from '../errors.js';
import { IssueList, formatPath, type PathSegment } from './issues.js';

export interface ParsedYaml {
  /** The document (comments kept) for edits; null when the text could not be parsed. */
  readonly doc: Document | null;
  readonly lines: LineCounter;
  readonly data: unknown;
  readonly issues: IssueList;
}

/** Config files are small; a bigger one is a wrong path, not a config. */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

export function parseYaml(text: string): ParsedYaml {
  const issues = new IssueList();
  const lines = new LineCounter();
  // uniqueKeys is off so the parse goes on and duplicates are reported below with their path
  // and both line numbers, which yaml's own error does not give.
  const doc = parseDocument(text, { uniqueKeys: false, prettyErrors: false, lineCounter: lines, strict: true });
  const where = (offset: number | undefined): string => {
    if (offset === undefined) return '';
    const { line, col } = lines.linePos(offset);
    return `line ${line}, column ${col}`;
  };
  for (const e of [...doc.errors, ...doc.warnings]) {
    issues.addAlways(where(e.pos[0]), firstLine(e.message), ErrorCodes.CONFIG_PARSE);
  }
  if (doc.errors.length === 0) findDuplicateKeys(doc.contents, [], issues, (n) => lines.linePos(n).line);
  if (issues.length > 0) return { doc: null, lines, data: undefined, issues };
  let data: unknown;
  try {
    // maxAliasCount bounds "billion laughs" expansion.
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    issues.addAlways('', `cannot be read as data: ${firstLine((err as Error).message)}`, ErrorCodes.CONFIG_PARSE);
    return { doc: null, lines, data: undefined, issues };
  }
  return { doc, lines, data, issues };
}

function firstLine(message: string): string {
  return (message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
}

function findDuplicateKeys(node: unknown, path: PathSegment[], issues: IssueList, lineOf: (offset: number) => number): void {
  if (isMap(node)) {
    const seen = new Map<string, number | undefined>();
    for (const pair of node.items) {
      const keyNode = pair.key as Node | null;
      const key = isScalar(keyNode) ? String(keyNode.value) : JSON.stringify(keyNode?.toJSON?.() ?? null);
      const offset = keyNode?.range?.[0];
      const line = offset === undefined ? undefined : lineOf(offset);
      if (seen.has(key)) {
        const first = seen.get(key);
        issues.addAlways(
          formatPath([...path, key]),
          `duplicate key${line === undefined ? '' : ` on line ${line}`}${first === undefined ? '' : `, first given on line ${first}`}`,
          ErrorCodes.CONFIG_PARSE,
        );
      } else {
        seen.set(key, line);
      }
      findDuplicateKeys(pair.value, [...path, key], issues, lineOf);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => findDuplicateKeys(item, [...path, i], issues, lineOf));
  }
}

/**
 * Where in the text an issue is: the node at its path or, for a missing or unknown key, the
 * nearest ancestor that exists. Used to list issues in file order and to give line numbers.
 */
export function offsetOfPath(doc: Document, segments: readonly PathSegment[]): number | undefined {
  for (let n = segments.length; n >= 0; n--) {
    const prefix = segments.slice(0, n);
    let node: unknown = doc.contents;
    if (n > 0) {
      // For a key, the key's own line reads better than its value's (a mapping value starts below).
      const parent = prefix.length === 1 ? doc.contents : doc.getIn(prefix.slice(0, -1), true);
      const last = prefix[prefix.length - 1];
      if (isMap(parent)) {
        const pair = parent.items.find((p) => isScalar(p.key) && String(p.key.value) === String(last));
        node = pair?.key ?? undefined;
      } else if (isSeq(parent) && typeof last === 'number') {
        node = parent.items[last];
      } else {
        node = undefined;
      }
    }
    const offset = (node as Node | undefined)?.range?.[0];
    if (offset !== undefined) return offset;
  }
  return undefined;
}
