// relayctl's edits of the white config: add or delete a gray in the YAML file itself (the running
// white picks the change up through its watcher). The file is the source of truth and may live in
// git, so edits go through yaml's Document API to keep comments, order and quoting, the result is
// validated in full before it is written, and the write is atomic.
//
// Concurrency, two layers:
// - relayctl processes serialize on a lock file (lock.ts);
// - everyone else (an editor, git pull) does not know the lock, so each edit remembers what it read
//   (mtime, size, inode, content hash) and checks it again just before the rename. If the file
//   moved on, the edit starts over from the new content; after a few tries it gives up with
//   CONCURRENT_EDIT rather than overwrite someone's work.
import { createHash } from 'node:crypto';
import { open, realpath, stat } from 'node:fs/promises';
import { isMap, isScalar, isSeq, Scalar, YAMLSeq, type Document, type ToStringOptions } from 'yaml';
import { ErrorCodes, RelayError } from '../errors.js';
import { writeFileAtomic } from './atomic-write.js';
import { issuesError, labelFor } from './issues.js';
import { parseWhiteConfig, readConfigText } from './load.js';
import { withFileLock, type LockOptions } from './lock.js';
import { canListen } from '../engine/listen.js';
import { allocatePorts } from './ports.js';
import { generateSecret } from './secret.js';
import { parseYaml } from './yaml.js';
import { SERVICE_NAME_PATTERN } from '../engine/protocol/constants.js';

export interface EditOptions {
  /** Environment for secret_env lookups during validation; process.env by default. */
  readonly env?: NodeJS.ProcessEnv;
  /** How many times an edit starts over when the file changed under it. Default 5. */
  readonly maxAttempts?: number;
  readonly lock?: LockOptions;
  /**
   * Runs after the new content is ready and before the "did the file change?" check; tests use it
   * to change the file at the worst moment.
   */
  readonly beforeCommit?: (attempt: number) => Promise<void>;
}

export interface AddGrayRequest {
  readonly id: string;
  /** Taken from ports.range when omitted (the single-service form, without services). */
  readonly publicPort?: number;
  readonly dataPort?: number;
  /** Service names: the entry gets a services list, each with a public port from ports.range. */
  readonly services?: readonly string[];
}

export interface AddedGray {
  readonly id: string;
  /** The new secret as written in the file (base64url); give it to the gray. */
  readonly secret: string;
  readonly publicPort: number;
  readonly dataPort: number;
  /** With request.services: each service's allocated public port, in order. */
  readonly services?: ReadonlyArray<{ readonly name: string; readonly publicPort: number }>;
}

export interface RemovedGray {
  readonly id: string;
  readonly publicPort: number | null;
  readonly dataPort: number | null;
}

const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

export async function addGray(path: string, request: AddGrayRequest, opts: EditOptions = {}): Promise<{ entry: AddedGray }> {
  if (!ID_PATTERN.test(request.id)) {
    throw new RelayError(ErrorCodes.CONFIG_INVALID, `gray id ${JSON.stringify(request.id)} is not 1 to 64 characters of A-Z a-z 0-9 . _ -`, {
      details: { id: request.id },
    });
  }
  for (const [name, port] of [
    ['public port', request.publicPort],
    ['data port', request.dataPort],
  ] as const) {
    if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) {
      throw new RelayError(ErrorCodes.CONFIG_INVALID, `${name} ${port} is outside 1..65535`, { details: { port } });
    }
  }
  return editWhiteConfig(path, opts, async (doc, text) => {
    const current = await parseWhiteConfig(text, path, { env: opts.env, lenientSecretSources: true });
    if (current.grays.some((g) => g.id === request.id)) {
      throw new RelayError(ErrorCodes.GRAY_EXISTS, `${labelFor(path)}: a gray with id ${JSON.stringify(request.id)} already exists`, {
        details: { file: path, id: request.id },
      });
    }
    // Every port the white listens on, so an allocated port never clashes with any of them.
    const used = new Set<number>([current.control.port]);
    if (current.admin.tcp) used.add(current.admin.tcp.port);
    if (current.metrics) used.add(current.metrics.port);
    if (current.dashboard) used.add(current.dashboard.port);
    for (const g of current.grays) {
      used.add(g.dataPort);
      for (const s of g.services) used.add(s.publicPort);
    }
    if (request.publicPort !== undefined) used.add(request.publicPort);
    if (request.dataPort !== undefined) used.add(request.dataPort);
    const names = request.services ?? [];
    checkServiceNames(names, path);
    const needed = (names.length > 0 ? names.length : request.publicPort === undefined ? 1 : 0) + (request.dataPort === undefined ? 1 : 0);
    let free: number[] = [];
    if (needed > 0) {
      if (current.portsRange === null) {
        throw new RelayError(
          ErrorCodes.CONFIG_INVALID,
          `${labelFor(path)}: ports.range is not set, so ports cannot be allocated; set it or give both ports`,
          { details: { file: path } },
        );
      }
      free = await allocatePorts(current.portsRange, used, needed, (port) => canListen(current.bind, port));
    }
    const services = names.map((name) => ({ name, publicPort: free.shift()! }));
    const publicPort = services[0]?.publicPort ?? request.publicPort ?? free.shift()!;
    const dataPort = request.dataPort ?? free.shift()!;
    const secret = generateSecret();

    const entry = doc.createNode(
      services.length > 0
        ? { id: request.id, secret, data_port: dataPort, services: services.map((s) => ({ name: s.name, public_port: s.publicPort })) }
        : { id: request.id, secret, public_port: publicPort, data_port: dataPort },
    );
    // Quoted so the secret reads as one opaque token, whatever characters it starts with.
    const secretNode = entry.get('secret', true);
    if (isScalar(secretNode)) secretNode.type = Scalar.QUOTE_DOUBLE;
    const grays = doc.get('grays', true);
    if (isSeq(grays)) {
      // `grays: []` is a flow sequence; entries added to it belong in block style.
      if (grays.items.length === 0) grays.flow = false;
      grays.add(entry);
    } else {
      // Missing or `grays:` with nothing after it (null).
      const seq = new YAMLSeq();
      seq.add(entry);
      doc.set('grays', seq);
    }
    return { entry: { id: request.id, secret, publicPort, dataPort, ...(services.length > 0 ? { services } : {}) } };
  });
}

function checkServiceNames(names: readonly string[], path: string): void {
  const seen = new Set<string>();
  for (const name of names) {
    if (!SERVICE_NAME_PATTERN.test(name)) throw new RelayError(ErrorCodes.CONFIG_INVALID, `service name ${JSON.stringify(name)} is not 1 to 32 of a-z 0-9 -`, { details: { file: path, name } });
    if (seen.has(name)) throw new RelayError(ErrorCodes.CONFIG_CONFLICT, `service ${JSON.stringify(name)} is given twice`, { details: { file: path, name } });
    seen.add(name);
  }
}

export interface AddServiceRequest {
  readonly id: string;
  readonly name: string;
  /** Taken from ports.range when omitted. */
  readonly publicPort?: number;
  /** CIDR networks; empty: anyone. Checked like the file (an invalid one names the entry). */
  readonly allow?: readonly string[];
}

/** Adds a service to an existing gray; a gray in the single-service form is rewritten as a list
 *  whose first service is `default` with its public_port. Returns the service's public port. */
export async function addService(path: string, request: AddServiceRequest, opts: EditOptions = {}): Promise<{ publicPort: number }> {
  checkServiceNames([request.name], path);
  return editWhiteConfig(path, opts, async (doc, text) => {
    const current = await parseWhiteConfig(text, path, { env: opts.env, lenientSecretSources: true });
    const gray = current.grays.find((g) => g.id === request.id);
    if (!gray) throw new RelayError(ErrorCodes.GRAY_UNKNOWN, `${labelFor(path)}: no gray with id ${JSON.stringify(request.id)}`, { details: { file: path, id: request.id } });
    if (gray.services.some((s) => s.name === request.name)) {
      throw new RelayError(ErrorCodes.CONFIG_CONFLICT, `${labelFor(path)}: gray ${JSON.stringify(request.id)} already has a service ${JSON.stringify(request.name)}`, { details: { file: path, id: request.id, name: request.name } });
    }
    let publicPort = request.publicPort;
    if (publicPort === undefined) {
      if (current.portsRange === null) throw new RelayError(ErrorCodes.CONFIG_INVALID, `${labelFor(path)}: ports.range is not set, so a port cannot be allocated; set it or give --public-port`, { details: { file: path } });
      publicPort = (await allocatePorts(current.portsRange, portsInUse(current), 1, (port) => canListen(current.bind, port)))[0]!;
    }
    const item = grayItem(doc, request.id)!;
    let list = item.get('services', true);
    if (!isSeq(list)) {
      // The single form becomes a list: its port is the service "default".
      const single = item.get('public_port');
      list = new YAMLSeq();
      if (typeof single === 'number') (list as YAMLSeq).add(doc.createNode({ name: 'default', public_port: single }));
      item.delete('public_port');
      item.set('services', list);
    }
    (list as YAMLSeq).add(doc.createNode({ name: request.name, public_port: publicPort, ...(request.allow && request.allow.length > 0 ? { allow: [...request.allow] } : {}) }));
    return { publicPort };
  });
}

/** Removes a service from a gray; its last service cannot go (delete the gray instead). */
export async function deleteService(path: string, id: string, name: string, opts: EditOptions = {}): Promise<{ publicPort: number | null }> {
  return editWhiteConfig(path, opts, async (doc) => {
    const item = grayItem(doc, id);
    if (!item) throw new RelayError(ErrorCodes.GRAY_UNKNOWN, `${labelFor(path)}: no gray with id ${JSON.stringify(id)}`, { details: { file: path, id } });
    const list = item.get('services', true);
    const index = isSeq(list) ? list.items.findIndex((s) => isMap(s) && s.get('name') === name) : -1;
    if (!isSeq(list) || index < 0) throw new RelayError(ErrorCodes.USAGE, `${labelFor(path)}: gray ${JSON.stringify(id)} has no service ${JSON.stringify(name)}`, { details: { file: path, id, name } });
    if (list.items.length === 1) throw new RelayError(ErrorCodes.USAGE, `${labelFor(path)}: ${JSON.stringify(name)} is the last service of gray ${JSON.stringify(id)}; delete the gray instead`, { details: { file: path, id, name } });
    const port = (list.items[index] as { get(k: string): unknown }).get('public_port');
    list.delete(index);
    return { publicPort: typeof port === 'number' ? port : null };
  });
}

function grayItem(doc: Document, id: string): ReturnType<typeof doc.createNode> & { get(k: string, keep?: boolean): unknown; set(k: string, v: unknown): void; delete(k: string): boolean } | null {
  const grays = doc.get('grays', true);
  if (!isSeq(grays)) return null;
  const item = grays.items.find((g) => isMap(g) && g.get('id') === id);
  return isMap(item) ? (item as never) : null;
}

function portsInUse(current: Awaited<ReturnType<typeof parseWhiteConfig>>): Set<number> {
  const used = new Set<number>([current.control.port]);
  if (current.admin.tcp) used.add(current.admin.tcp.port);
  if (current.metrics) used.add(current.metrics.port);
  if (current.dashboard) used.add(current.dashboard.port);
  for (const g of current.grays) {
    used.add(g.dataPort);
    for (const s of g.services) used.add(s.publicPort);
  }
  return used;
}

export async function deleteGray(path: string, id: string, opts: EditOptions = {}): Promise<{ removed: RemovedGray }> {
  return editWhiteConfig(path, opts, async (doc) => {
    const grays = doc.get('grays', true);
    let removed: RemovedGray | null = null;
    if (isSeq(grays)) {
      // From the end, so indexes stay valid; all entries with the id go (a file with a duplicate
      // id is invalid, and deleting the id should leave no trace of it).
      for (let i = grays.items.length - 1; i >= 0; i--) {
        const item = grays.items[i];
        if (isMap(item) && item.get('id') === id) {
          const pub = item.get('public_port');
          const data = item.get('data_port');
          removed = { id, publicPort: typeof pub === 'number' ? pub : null, dataPort: typeof data === 'number' ? data : null };
          grays.delete(i);
        }
      }
    }
    if (removed === null) {
      throw new RelayError(ErrorCodes.GRAY_UNKNOWN, `${labelFor(path)}: no gray with id ${JSON.stringify(id)}`, { details: { file: path, id } });
    }
    return { removed };
  });
}

interface Snapshot {
  readonly text: string;
  readonly hash: string;
  readonly size: bigint;
  readonly mtimeNs: bigint;
  readonly ino: bigint;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

async function takeSnapshot(file: string): Promise<Snapshot> {
  // readConfigText first: it gives the proper CONFIG_READ errors (missing, too big...).
  await readConfigText(file);
  const handle = await open(file, 'r');
  try {
    const st = await handle.stat({ bigint: true });
    const text = await handle.readFile({ encoding: 'utf8' });
    return { text, hash: sha256(text), size: st.size, mtimeNs: st.mtimeNs, ino: st.ino, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid) };
  } finally {
    await handle.close();
  }
}

async function stillSame(file: string, snap: Snapshot): Promise<boolean> {
  try {
    const st = await stat(file, { bigint: true });
    if (st.ino !== snap.ino || st.size !== snap.size || st.mtimeNs !== snap.mtimeNs) return false;
    const now = await readConfigText(file);
    return sha256(now) === snap.hash;
  } catch {
    return false;
  }
}

/**
 * read → parse (comments kept) → mutate → validate the result fully → atomic write if the file is
 * still what was read; otherwise start over. `mutate` may run several times.
 */
async function editWhiteConfig<T>(path: string, opts: EditOptions, mutate: (doc: Document, text: string) => Promise<T>): Promise<T> {
  // A symlinked config is edited where it really lives; renaming over the link would replace
  // the link with a plain file.
  let file: string;
  try {
    file = await realpath(path);
  } catch {
    await readConfigText(path); // throws the CONFIG_READ error with the reason
    file = path;
  }
  const label = labelFor(path);
  const maxAttempts = opts.maxAttempts ?? 5;
  return withFileLock(
    file,
    async () => {
      for (let attempt = 1; attempt <= maxAttempts; attempt++) {
        const snap = await takeSnapshot(file);
        const parsed = parseYaml(snap.text);
        if (parsed.doc === null) throw issuesError(label, parsed.issues.items);
        const doc = parsed.doc;
        const result = await mutate(doc, snap.text);
        const next = doc.toString(layoutOf(snap.text));
        // Validated as the white will read it: same path, so relative paths resolve the same way.
        // Secret sources that depend on who runs relayctl are not held against the edit.
        await parseWhiteConfig(next, path, { env: opts.env, lenientSecretSources: true });
        const written = await writeFileAtomic(file, next, {
          mode: snap.mode,
          uid: snap.uid,
          gid: snap.gid,
          beforeRename: async () => {
            await opts.beforeCommit?.(attempt);
            return stillSame(file, snap);
          },
        });
        if (written) return result;
      }
      throw new RelayError(
        ErrorCodes.CONCURRENT_EDIT,
        `${label}: the file kept changing while it was being edited (${maxAttempts} attempts); nothing was written, try again`,
        { details: { file: path, attempts: maxAttempts } },
      );
    },
    opts.lock,
  );
}

/**
 * yaml re-serializes the whole document; these options make it reproduce the file's own layout
 * as far as it can: its indentation width, whether list items are indented under their key, and
 * no re-folding of long lines.
 */
export function layoutOf(text: string): ToStringOptions {
  let indent: number | undefined;
  let indentSeq: boolean | undefined;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length - 1 && (indent === undefined || indentSeq === undefined); i++) {
    const line = lines[i]!;
    // A key that opens a nested block: `key:` with nothing but maybe a comment after it.
    const open = /^( *)(- +)?[^\s#][^#]*:\s*(#.*)?$/.exec(line);
    if (!open) continue;
    let j = i + 1;
    while (j < lines.length && /^\s*(#.*)?$/.test(lines[j]!)) j++;
    const child = lines[j];
    if (child === undefined) break;
    const keyCol = open[1]!.length + (open[2]?.length ?? 0);
    const childCol = /^ */.exec(child)![0].length;
    if (/^ *- /.test(child)) {
      if (indentSeq === undefined) indentSeq = childCol > keyCol;
    } else if (childCol > keyCol && indent === undefined) {
      indent = childCol - keyCol;
    }
  }
  return { indent: indent ?? 2, indentSeq: indentSeq ?? true, lineWidth: 0, minContentWidth: 0 };
}

export interface RenderGrayOptions {
  /** The white's control address as grays reach it, e.g. "white.example.com:7000". */
  readonly white: string;
  readonly id: string;
  readonly secret: string;
  /** The local service; a placeholder is written when omitted. */
  readonly target?: string;
  /** Several services by name, each with its target: written as services instead of target. */
  readonly services?: ReadonlyArray<{ readonly name: string; readonly target: string }>;
}

/** The gray.yaml to hand to the operator of a new gray (relayctl add prints it). */
export function renderGrayConfig(opts: RenderGrayOptions): string {
  const q = (s: string): string => JSON.stringify(s);
  return [
    `# relay gray agent "${opts.id}"; run it with: relay gray --config gray.yaml`,
    '# Keep this file private (chmod 600): the secret lets anyone act as this gray.',
    `white: ${q(opts.white)}          # the white server's control address`,
    `id: ${q(opts.id)}`,
    `secret: ${q(opts.secret)}`,
    ...(opts.services && opts.services.length > 0
      ? ['services:                     # proxy_protocol: none | v1 | v2 per service tells its target the client address', ...opts.services.map((s) => `  ${s.name}: { target: ${q(s.target)} }`)]
      : [
          `target: ${q(opts.target ?? '127.0.0.1:8080')}${opts.target === undefined ? '   # CHANGE ME: the local service to expose' : '   # the local service to expose'}`,
          'proxy_protocol: none          # none | v1 | v2: tell the target the client address',
        ]),
    'pool: 8                       # idle data connections kept open to the white',
    '',
  ].join('\n');
}
