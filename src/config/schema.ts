// The JSON Schemas (schema/*.schema.json) and their compiled validators. Two parts of each schema
// are generated from code rather than written by hand, so they cannot drift from it: the `limits`
// object (from DEFAULT_LIMITS) and the list of hook event names (from EVENT_NAMES). The files in
// schema/ carry the same generated text for editors and other tools; a test checks they agree, and
// `node dist/src/config/schema.js --write` rewrites them.
import { writeFile } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import whiteSchemaFile from '../../schema/white.schema.json' with { type: 'json' };
import graySchemaFile from '../../schema/gray.schema.json' with { type: 'json' };
import { DEFAULT_LIMITS } from '../limits.js';
import { EVENT_NAMES } from '../hooks/events.js';
import { showValue, isSensitivePath, type IssueList, type PathSegment } from './issues.js';

type JsonObject = Record<string, unknown>;

/** `clientWaitMs` → `client_wait_ms`. */
export function snakeCase(camel: string): string {
  return camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** `client_wait_ms` → `clientWaitMs`. */
export function camelCase(snake: string): string {
  return snake.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/** Largest delay setTimeout honours; a bigger one fires at once, which would turn a limit off. */
export const MAX_LIMIT_VALUE = 2_147_483_647;

/** The `limits` object schema, one integer property per DEFAULT_LIMITS key. */
export function limitsSchema(): JsonObject {
  const properties: JsonObject = {};
  for (const [name, value] of Object.entries(DEFAULT_LIMITS)) {
    properties[snakeCase(name)] = {
      type: 'integer',
      minimum: 1,
      maximum: MAX_LIMIT_VALUE,
      description: `${name} in src/limits.ts; default ${value}`,
    };
  }
  return {
    type: 'object',
    description: 'Overrides for the built-in limits (src/limits.ts); omitted keys keep their defaults.',
    additionalProperties: false,
    properties,
  };
}

export function eventNameSchema(): JsonObject {
  return { type: 'string', enum: [...EVENT_NAMES], description: 'An event name from src/hooks/events.ts' };
}

/** The schema with its generated parts filled in from code. */
function complete(file: unknown, withEvents: boolean): JsonObject {
  const schema = structuredClone(file) as JsonObject;
  const defs = (schema.definitions ?? {}) as JsonObject;
  defs.limits = limitsSchema();
  if (withEvents) defs.eventName = eventNameSchema();
  schema.definitions = defs;
  return schema;
}

export function whiteSchema(): JsonObject {
  return complete(whiteSchemaFile, true);
}

export function graySchema(): JsonObject {
  return complete(graySchemaFile, false);
}

let ajv: Ajv | null = null;
const compiled = new Map<string, ValidateFunction>();

/**
 * Compiled once per process and per kind, on first use: compiling is the expensive part, the
 * schemas never change, and a gray (or `relay verify` of one file) needs only one of the two.
 */
function validator(kind: 'white' | 'gray', portZero: boolean): ValidateFunction {
  const key = `${kind}${portZero ? '+port0' : ''}`;
  let validate = compiled.get(key);
  if (validate === undefined) {
    // allErrors: report every problem at once. useDefaults: the schema is the one place defaults
    // live. verbose: errors carry the offending value and the sub-schema, which the messages use.
    // strictRequired is off because the oneOf branches name keys defined beside them.
    ajv ??= new Ajv({ allErrors: true, useDefaults: true, verbose: true, allowUnionTypes: true, strict: true, strictRequired: false });
    const schema = kind === 'white' ? whiteSchema() : graySchema();
    // A gray's public and data ports (the only `port` integers) may be 0 where the caller allows it.
    const port = (schema.definitions as Record<string, JsonObject> | undefined)?.port;
    if (portZero && port !== undefined) port.minimum = 0;
    validate = ajv.compile(schema);
    compiled.set(key, validate);
  }
  return validate;
}

/** Validates (and fills defaults into) `data`, adding one issue per violated rule. */
export function validateAgainstSchema(kind: 'white' | 'gray', data: unknown, issues: IssueList, portZero = false): void {
  const validate = validator(kind, portZero);
  if (validate(data)) return;
  for (const issue of describeAjvErrors(validate.errors ?? [])) issues.add(issue.segments, issue.message);
}

function pointerToSegments(pointer: string): PathSegment[] {
  if (pointer === '') return [];
  return pointer
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : s));
}

const TYPE_WORDS: Record<string, string> = {
  string: 'a string',
  integer: 'an integer',
  number: 'a number',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
  null: 'null',
};

function typeWords(types: unknown): string {
  const list = String(types).split(',').map((t) => TYPE_WORDS[t] ?? t);
  return list.length <= 1 ? (list[0] ?? '') : `${list.slice(0, -1).join(', ')} or ${list[list.length - 1]}`;
}

function keysOf(branches: unknown): { keys: string[]; allowNone: boolean } {
  const keys: string[] = [];
  let allowNone = false;
  if (Array.isArray(branches)) {
    for (const b of branches as JsonObject[]) {
      if (Array.isArray(b.required)) keys.push(...(b.required as string[]));
      if (b.not !== undefined) allowNone = true;
    }
  }
  return { keys: [...new Set(keys)], allowNone };
}

function listWords(items: readonly string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

/** Turns ajv's errors into `path: value + rule` sentences. */
export function describeAjvErrors(errors: readonly ErrorObject[]): Array<{ segments: PathSegment[]; message: string }> {
  // oneOf is only used for "exactly one (or at most one) of these keys"; its branch errors
  // ("must have required property 'secret'" three times) say nothing useful, so they are dropped
  // and the oneOf error is rewritten from the data.
  const oneOfPaths = errors.filter((e) => e.keyword === 'oneOf').map((e) => `${e.schemaPath}/`);
  const out: Array<{ segments: PathSegment[]; message: string }> = [];
  for (const e of errors) {
    if (oneOfPaths.some((p) => e.schemaPath.startsWith(p))) continue;
    const segments = pointerToSegments(e.instancePath);
    const hide = isSensitivePath(segments);
    const shown = hide ? 'the value' : showValue(e.data);
    const params = e.params as Record<string, unknown>;
    const parent = (e.parentSchema ?? {}) as JsonObject;
    let message: string;
    switch (e.keyword) {
      case 'additionalProperties':
        segments.push(String(params.additionalProperty));
        message = 'unknown key';
        break;
      case 'required':
        segments.push(String(params.missingProperty));
        message = 'required key is missing';
        break;
      case 'type':
        message = `${shown} is not ${typeWords(params.type)}`;
        break;
      case 'enum':
        message = `${shown} is not one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
        break;
      case 'minimum':
        message = `${shown} is below the minimum ${String(params.limit)}`;
        break;
      case 'maximum':
        message = `${shown} is above the maximum ${String(params.limit)}`;
        break;
      case 'minLength':
        message = `${hide ? 'the value' : shown} is ${String(e.data).length} characters long, at least ${String(params.limit)} required`;
        break;
      case 'maxLength':
        message = `${hide ? 'the value' : shown} is ${String(e.data).length} characters long, at most ${String(params.limit)} allowed`;
        break;
      case 'pattern':
        message = `${shown} is not ${typeof parent.description === 'string' ? parent.description : `matching ${String(params.pattern)}`}`;
        break;
      case 'minItems':
        message = `has ${(e.data as unknown[]).length} items, at least ${String(params.limit)} required`;
        break;
      case 'maxItems':
        message = `has ${(e.data as unknown[]).length} items, at most ${String(params.limit)} allowed`;
        break;
      case 'minProperties':
        message = `has ${Object.keys(e.data as object).length} entries, at least ${String(params.limit)} required`;
        break;
      case 'maxProperties':
        message = `has ${Object.keys(e.data as object).length} entries, at most ${String(params.limit)} allowed`;
        break;
      case 'uniqueItems':
        message = `items ${String(params.j)} and ${String(params.i)} are the same (${showValue((e.data as unknown[])[params.i as number])})`;
        break;
      case 'oneOf': {
        const { keys, allowNone } = keysOf(e.schema);
        const data = (e.data ?? {}) as JsonObject;
        const present = keys.filter((k) => data[k] !== undefined);
        message =
          present.length === 0
            ? `exactly one of ${keys.join(', ')} is required, found none`
            : `${allowNone ? 'at most' : 'exactly'} one of ${keys.join(', ')} may be given, found ${listWords(present)}`;
        break;
      }
      default:
        message = `${shown} ${e.message ?? 'is invalid'}`;
    }
    out.push({ segments, message });
  }
  return out;
}

/** Rewrites the generated parts of the schema files in schema/ from code. */
export async function writeSchemaFiles(): Promise<string[]> {
  const root = new URL('../../../', import.meta.url);
  const written: string[] = [];
  for (const [name, schema] of [
    ['white.schema.json', whiteSchema()],
    ['gray.schema.json', graySchema()],
  ] as const) {
    const file = fileURLToPath(new URL(`schema/${name}`, root));
    await writeFile(file, `${JSON.stringify(schema, null, 2)}\n`);
    written.push(file);
  }
  return written;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv.includes('--write')) {
  for (const file of await writeSchemaFiles()) process.stdout.write(`wrote ${file}\n`);
}
