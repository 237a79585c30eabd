// add, delete and show: the implementations behind both `relayctl` and the white's console, so the
// two cannot drift apart. add and delete edit the file (config/edit.ts: comments kept, validated,
// atomic, lock + re-check against concurrent edits); the running white applies the result through
// its hot reload like any other save. show renders the admin API's state document.
import { lstat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { adminTokenProblem } from '../admin/admin-auth.js';
import type { AdminTarget } from '../admin/client.js';
import type { AdminState } from '../admin/server.js';
import { formatHostPort, parseHostPort } from '../config/address.js';
import { secretExposureWarning } from '../config/exposure.js';
import { addGray, addService, deleteGray, deleteService, renderGrayConfig, type AddedGray, type RemovedGray } from '../config/edit.js';
import { issuesError, labelFor } from '../config/issues.js';
import { readConfigText } from '../config/load.js';
import { ephemeralOverlap, ephemeralPortRange, parsePortRange } from '../config/ports.js';
import { whiteSchema } from '../config/schema.js';
import { parseYaml } from '../config/yaml.js';
import { ErrorCodes, RelayError } from '../errors.js';

/** `RELAY_CONFIG`, else `./white.yaml`. */
export function defaultConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.RELAY_CONFIG && env.RELAY_CONFIG !== '' ? env.RELAY_CONFIG : 'white.yaml';
}

// ---------------------------------------------------------------- arguments

export type ArgOptions = NonNullable<ParseArgsConfig['options']>;
export type ParsedArgs = { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] };

/** The options of `add` besides --config/--help, shared by relayctl and the console's /add. */
export const ADD_OPTIONS: ArgOptions = {
  'public-port': { type: 'string' },
  'data-port': { type: 'string' },
  white: { type: 'string' },
  target: { type: 'string' },
  service: { type: 'string', multiple: true },
};

/** node:util parseArgs, strict, with its complaints turned into USAGE errors. */
export function parseCommandArgs(args: string[], options: ArgOptions): ParsedArgs {
  try {
    const { values, positionals } = parseArgs({ args, options, strict: true, allowPositionals: true });
    return { values: values as ParsedArgs['values'], positionals };
  } catch (err) {
    throw new RelayError(ErrorCodes.USAGE, (err as Error).message, { cause: err });
  }
}

/** `<id>` and ADD_OPTIONS, parsed and checked. */
export function addArgsFrom({ values, positionals }: ParsedArgs, command: string): AddArgs {
  const str = (name: string): string | undefined => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  return {
    id: onePositional(positionals, command),
    publicPort: portOption('--public-port', str('public-port')),
    dataPort: portOption('--data-port', str('data-port')),
    white: str('white'),
    target: str('target'),
    services: serviceOptions(values.service),
  };
}

/** `--service name=host:port`, repeated. */
function serviceOptions(value: unknown): Array<{ name: string; target: string }> | undefined {
  if (!Array.isArray(value)) return undefined;
  return value.map((text: string) => {
    const eq = text.indexOf('=');
    if (eq < 1) throw new RelayError(ErrorCodes.USAGE, `--service ${JSON.stringify(text)} is not name=host:port`);
    const name = text.slice(0, eq);
    const target = text.slice(eq + 1);
    checkHostPort(`--service ${name}`, target);
    return { name, target };
  });
}

export function onePositional(positionals: string[], command: string): string {
  if (positionals.length !== 1) {
    throw new RelayError(ErrorCodes.USAGE, `${command} takes exactly one gray id, got ${positionals.length}`);
  }
  return positionals[0]!;
}

function portOption(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const port = /^[0-9]{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new RelayError(ErrorCodes.USAGE, `${flag} ${JSON.stringify(text)} is not a port number 1..65535`);
  return port;
}

// ---------------------------------------------------------------- add

export interface AddArgs {
  readonly id: string;
  readonly publicPort?: number | undefined;
  readonly dataPort?: number | undefined;
  /** The white's control address as the gray will reach it ("host:port"). */
  readonly white?: string | undefined;
  /** The gray's local service ("host:port"). */
  readonly target?: string | undefined;
  /** Several services, each with its target; not with target or publicPort. */
  readonly services?: ReadonlyArray<{ readonly name: string; readonly target: string }> | undefined;
}

export interface AddOutcome {
  readonly entry: AddedGray;
  /** The complete gray.yaml for the new gray (contains its secret). */
  readonly grayYaml: string;
  /** One line for a person: what was written where (whoever runs add says how it is applied). */
  readonly summary: string;
  /** Things the person should check (a guessed white address). */
  readonly warnings: readonly string[];
}

export async function addCommand(configPath: string, args: AddArgs): Promise<AddOutcome> {
  // Checked before the file is touched: a typo here must not leave a half-done registration.
  if (args.white !== undefined) checkHostPort('--white', args.white);
  if (args.target !== undefined) checkHostPort('--target', args.target);
  const services = args.services ?? [];
  if (services.length > 0 && (args.target !== undefined || args.publicPort !== undefined)) {
    throw new RelayError(ErrorCodes.USAGE, '--service is not used with --target or --public-port: each service gets its own public port from ports.range');
  }
  const { entry } = await addGray(configPath, {
    id: args.id,
    ...(args.publicPort === undefined ? {} : { publicPort: args.publicPort }),
    ...(args.dataPort === undefined ? {} : { dataPort: args.dataPort }),
    ...(services.length > 0 ? { services: services.map((s) => s.name) } : {}),
  });
  const warnings: string[] = [];
  // The new entry's secret is inline: the white's file is now as private as its mode.
  const exposed = await secretExposureWarning(configPath, [`the secret of "${entry.id}"`]);
  if (exposed !== null) warnings.push(exposed);
  const range = field(await readRawConfig(configPath), 'ports', 'range');
  const parsedRange = typeof range === 'string' ? parsePortRange(range) : null;
  const overlap = parsedRange?.ok ? ephemeralOverlap(parsedRange.value, await ephemeralPortRange()) : null;
  if (overlap) warnings.push(overlap);
  let white = args.white;
  if (white === undefined) {
    const guess = await guessWhiteAddress(configPath);
    white = guess.address;
    if (guess.warning) warnings.push(guess.warning);
  }
  const grayYaml = renderGrayConfig({ white, id: entry.id, secret: entry.secret, ...(args.target === undefined ? {} : { target: args.target }), ...(services.length > 0 ? { services } : {}) });
  const ports = entry.services ? `public ports ${entry.services.map((s) => `${s.name} ${s.publicPort}`).join(', ')}` : `public port ${entry.publicPort}`;
  const summary = `added gray "${entry.id}" to ${configPath}: ${ports}, data port ${entry.dataPort}`;
  return { entry, grayYaml, summary, warnings };
}

function checkHostPort(flag: string, text: string): void {
  const parsed = parseHostPort(text);
  if (!parsed.ok) throw new RelayError(ErrorCodes.USAGE, `${flag} ${JSON.stringify(text)} ${parsed.reason}`);
}

const WILDCARDS = new Set(['0.0.0.0', '::', '0:0:0:0:0:0:0:0']);

/**
 * The control address to write into gray.yaml when --white is not given: the configured listen
 * address, unless it is a wildcard, in which case this machine's host name (and a warning, since
 * the white's public name is often not its host name).
 */
async function guessWhiteAddress(configPath: string): Promise<{ address: string; warning: string | null }> {
  const raw = await readRawConfig(configPath);
  const listen = field(raw, 'control', 'listen');
  const parsed = typeof listen === 'string' ? parseHostPort(listen) : null;
  const port = parsed?.ok ? parsed.value.port : 7000;
  if (parsed?.ok && !WILDCARDS.has(parsed.value.host)) return { address: formatHostPort(parsed.value), warning: null };
  const address = formatHostPort({ host: hostname(), port });
  return { address, warning: `the white address in gray.yaml is a guess (${address}); pass --white host:port with the address grays can reach` };
}

// ---------------------------------------------------------------- service add|delete

export const SERVICE_OPTIONS: ArgOptions = {
  allow: { type: 'string', multiple: true },
  'public-port': { type: 'string' },
};

/** `service add|delete <gray> <name> [--allow CIDR]... [--public-port N]`: edits an existing gray. */
export async function serviceCommand(configPath: string, { values, positionals }: ParsedArgs): Promise<string> {
  const [action, id, name, ...extra] = positionals;
  if ((action !== 'add' && action !== 'delete') || id === undefined || name === undefined || extra.length > 0) {
    throw new RelayError(ErrorCodes.USAGE, 'usage: service add|delete <gray> <name> [--allow CIDR]... [--public-port N]');
  }
  if (action === 'delete') {
    if (values.allow !== undefined || values['public-port'] !== undefined) throw new RelayError(ErrorCodes.USAGE, 'service delete takes no --allow or --public-port');
    const { publicPort } = await deleteService(configPath, id, name);
    return `deleted service "${name}" of gray "${id}"${publicPort === null ? '' : ` (public port ${publicPort})`} from ${configPath}`;
  }
  const allow = Array.isArray(values.allow) ? (values.allow as string[]) : [];
  const port = portOption('--public-port', typeof values['public-port'] === 'string' ? values['public-port'] : undefined);
  const { publicPort } = await addService(configPath, { id, name, allow, ...(port === undefined ? {} : { publicPort: port }) });
  return `added service "${name}" to gray "${id}" in ${configPath}: public port ${publicPort}${allow.length > 0 ? `, allow ${allow.join(' ')}` : ''}; add it to the gray's file too (services: ${name}: { target: "host:port" })`;
}

// ---------------------------------------------------------------- delete

export interface DeleteOutcome {
  readonly removed: RemovedGray;
  readonly summary: string;
}

export async function deleteCommand(configPath: string, id: string): Promise<DeleteOutcome> {
  const { removed } = await deleteGray(configPath, id);
  const ports = removed.publicPort !== null ? ` (public port ${removed.publicPort}, data port ${removed.dataPort ?? '?'})` : '';
  return {
    removed,
    summary: `deleted gray "${id}"${ports} from ${configPath}; the running white closes its ports and clients on its next reload`,
  };
}

// ---------------------------------------------------------------- show

/**
 * Where relayctl finds the white's admin API, from the config file. Read leniently (YAML only, no
 * validation): `show` must work exactly when the file is broken and the white refused it. The Unix
 * socket is preferred whenever it is configured (the file system decides who may connect, and
 * nothing secret is involved); the TCP listener is used when the socket is disabled, or when it is
 * the default one and there is no such file here (relayctl runs outside the white's container).
 */
export async function adminTargetFor(configPath: string): Promise<AdminTarget> {
  const raw = await readRawConfig(configPath);
  const socket = field(raw, 'admin', 'socket');
  const listen = field(raw, 'admin', 'tcp', 'listen');
  const token = field(raw, 'admin', 'tcp', 'token');
  const tcp = typeof listen === 'string' && typeof token === 'string' ? tcpTarget(configPath, listen, token) : null;
  const folder = dirname(resolve(configPath));
  if (typeof socket === 'string') return { socket: isAbsolute(socket) ? socket : resolve(folder, socket) };
  if (socket === null) {
    if (tcp !== null) return tcp;
    throw new RelayError(ErrorCodes.USAGE, `${configPath}: the admin socket is disabled (admin.socket: null); pass --socket PATH`);
  }
  // Key absent: the schema's default, relative to the config's folder like the white resolves it.
  const path = resolve(folder, defaultAdminSocket());
  if (tcp !== null && !(await exists(path))) return tcp;
  return { socket: path };
}

function tcpTarget(configPath: string, listen: string, token: string): AdminTarget {
  // The server refuses to start with a token this refuses, so failing here is never a false alarm.
  const problem = adminTokenProblem(token);
  if (problem !== null) throw new RelayError(ErrorCodes.CONFIG_INVALID, `${configPath}: admin.tcp.token: ${problem}`);
  return { url: `http://${listen}`, token };
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

function defaultAdminSocket(): string {
  const value = field(whiteSchema(), 'properties', 'admin', 'properties', 'socket', 'default');
  return typeof value === 'string' ? value : './relay-admin.sock';
}

export function showJson(state: AdminState): string {
  return `${JSON.stringify(state, null, 2)}\n`;
}

/** The readable form of `show`: a table of grays, then the white's own facts. */
export function renderShow(state: AdminState, now = Date.now()): string {
  const out: string[] = [];
  if (state.grays.length === 0) {
    out.push('no grays in the config');
  } else {
    const rows = [...state.grays]
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map((g) => [
        g.id,
        `${g.publicPort}/${g.dataPort}`,
        g.portsBound === false ? 'ports not bound, retrying' : g.connected ? `connected since ${when(g.connectedSince, now)}` : 'offline',
        g.remoteAddress ?? '-',
        `${g.poolIdle}/${g.poolTarget}`,
        `${g.activeClients} active, ${g.pendingClients} pending`,
        `${formatBytes(g.bytesFromClients)} / ${formatBytes(g.bytesToClients)}`,
        g.listenError ? oneLine(g.listenError) : g.lastError === null ? '-' : oneLine(g.lastError),
      ]);
    out.push(...table(['GRAY', 'PUBLIC/DATA', 'STATUS', 'REMOTE', 'POOL IDLE/TARGET', 'CLIENTS', 'IN / OUT', 'LAST ERROR'], rows));
    // Services, when a gray has more than its one "default" or an allow-list.
    const services = [...state.grays]
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .flatMap((g) => (g.services ?? []).map((s) => ({ gray: g.id, s })))
      .filter(({ gray, s }) => s.name !== 'default' || s.allow.length > 0 || (state.grays.find((g) => g.id === gray)?.services?.length ?? 0) > 1);
    if (services.length > 0) {
      out.push('');
      out.push(
        ...table(
          ['GRAY', 'SERVICE', 'PUBLIC', 'ALLOW', 'CLIENTS', 'IN / OUT', 'REFUSED'],
          services.map(({ gray, s }) => [
            gray,
            s.name,
            String(s.publicPort),
            s.allow.length === 0 ? 'anyone' : s.allow.join(' '),
            `${s.activeClients} active, ${s.clientsTotal} total`,
            `${formatBytes(s.bytesFromClients)} / ${formatBytes(s.bytesToClients)}`,
            Object.entries(s.clientsRefused).length === 0 ? '-' : Object.entries(s.clientsRefused).map(([code, n]) => `${n} ${code.replace(/^RELAY_ERR_/, '')}`).join(', '),
          ]),
        ),
      );
    }
  }
  out.push('');
  const c = state.counters;
  const facts: Array<[string, string]> = [['config', state.configPath ?? '(built in code)']];
  if (c.lastReload === null) {
    facts.push(['last reload', 'none since start']);
  } else {
    const notApplied = c.lastReload.notApplied ?? [];
    const outcome = !c.lastReload.ok ? 'FAILED, the previous config stays' : notApplied.length > 0 ? 'applied, except:' : 'applied';
    facts.push(['last reload', `${when(c.lastReload.at, now)}: ${outcome}`]);
    if (!c.lastReload.ok && c.lastReload.error) {
      for (const line of c.lastReload.error.split('\n')) facts.push(['', `  ${line}`]);
    }
    if (c.lastReload.ok) for (const line of notApplied) facts.push(['', `  ${oneLine(line)}`]);
  }
  facts.push(['reloads', `${c.reloads.ok} applied, ${c.reloads.rejected} rejected`]);
  if (state.hooks.length === 0) facts.push(['hooks', 'none']);
  for (const [i, h] of state.hooks.entries()) {
    const err = h.lastError === null ? '' : `; last error: ${oneLine(h.lastError)}`;
    facts.push([i === 0 ? 'hooks' : '', `${h.url}: ${h.delivered} delivered, ${h.failed} failed, ${h.dropped} dropped, ${h.queued} queued${err}`]);
  }
  facts.push(['white', `version ${state.version}, up ${formatDuration(now - state.startedAt)}, ${c.authFailures} failed gray logins`]);
  const width = Math.max(...facts.map(([k]) => k.length));
  for (const [k, v] of facts) out.push(`${k.padEnd(width)}  ${v}`.trimEnd());
  return `${out.join('\n')}\n`;
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

/** "2025-01-31 14:02:03 (5m ago)", in the reader's local time. */
function when(at: number | null, now: number): string {
  if (at === null) return '-';
  const d = new Date(at);
  const p = (n: number): string => String(n).padStart(2, '0');
  const stamp = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  return `${stamp} (${formatDuration(now - at)} ago)`;
}

export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${UNITS[unit]}`;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' | ');
}

// ---------------------------------------------------------------- raw file access

/** The file's YAML as plain data, without validation; YAML errors are still errors. */
async function readRawConfig(configPath: string): Promise<unknown> {
  const parsed = parseYaml(await readConfigText(configPath));
  if (parsed.issues.length > 0) throw issuesError(labelFor(configPath), parsed.issues.items);
  return parsed.data;
}

function field(data: unknown, ...keys: string[]): unknown {
  let cur: unknown = data;
  for (const key of keys) {
    if (typeof cur !== 'object' || cur === null || Array.isArray(cur) || !Object.hasOwn(cur, key)) return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}
