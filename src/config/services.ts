// Services: what one gray exposes. The white's file gives each service a public port and an
// optional allow-list; the gray's file gives each a target and a PROXY setting. Both files also
// take the older single-service form (`public_port`, `target`), which is the service `default`.
// A file that mixes the two forms is refused with the way to write it.
import { ErrorCodes } from '../errors.js';
import { parseCidr, type Cidr } from '../engine/protocol/cidr.js';
import { SERVICE_NAME_PATTERN } from '../engine/protocol/constants.js';
import type { IssueList, PathSegment } from './issues.js';
import type { GrayService, HostPort, ProxyProtocol, WhiteService } from './types.js';

/** The name of the one service of a file in the single-service form. */
export const DEFAULT_SERVICE = 'default';
export { SERVICE_NAME_PATTERN };
/** The schema's limit; the start header's one byte allows more, which reloads use up (a removed
 *  service's index is not given to another within a session). */
export const SERVICES_PER_GRAY_MAX = 64;
export const ALLOW_ENTRIES_MAX = 256;

type Obj = Record<string, unknown>;

function obj(v: unknown): Obj | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : null;
}

function nameProblem(name: string): string | null {
  return SERVICE_NAME_PATTERN.test(name) ? null : `${JSON.stringify(name)} is not a service name: 1 to 32 of a-z 0-9 -`;
}

/** An allow-list as written; each invalid entry is an issue naming it. */
export function allowListAt(v: unknown, segments: PathSegment[], issues: IssueList): Cidr[] {
  const out: Cidr[] = [];
  if (!Array.isArray(v)) return out;
  for (const [k, entry] of v.entries()) {
    if (typeof entry !== 'string') continue;
    const parsed = parseCidr(entry);
    if (parsed.ok) out.push(parsed.value);
    else issues.add([...segments, k], `${JSON.stringify(entry)} ${parsed.reason}`);
  }
  return out;
}

function int(v: unknown): number {
  return typeof v === 'number' && Number.isInteger(v) ? v : 0;
}

/** A white's `grays[i]`: `services`, or the single `public_port` as service `default`. */
export function whiteServicesAt(go: Obj, at: PathSegment[], issues: IssueList): WhiteService[] {
  const hasList = go.services !== undefined && go.services !== null;
  const hasSingle = go.public_port !== undefined;
  if (hasList && hasSingle) {
    issues.addAlways(
      at,
      `has both public_port and services; write one form: either public_port alone (one service named "${DEFAULT_SERVICE}"), or move it into the list as services: [{ name: ${DEFAULT_SERVICE}, public_port: ${int(go.public_port) || 'N'} }]`,
    );
    return [];
  }
  if (!hasList) {
    if (!hasSingle) {
      issues.add([...at, 'public_port'], 'required key is missing (or give services, a list of { name, public_port })');
      return [];
    }
    return [{ name: DEFAULT_SERVICE, publicPort: int(go.public_port), allow: [] }];
  }
  const out: WhiteService[] = [];
  const seen = new Map<string, number>();
  const list = Array.isArray(go.services) ? go.services : [];
  for (const [j, s] of list.entries()) {
    const so = obj(s);
    if (so === null) continue;
    const name = typeof so.name === 'string' ? so.name : '';
    if (typeof so.name === 'string') {
      const problem = nameProblem(name);
      if (problem !== null) issues.add([...at, 'services', j, 'name'], problem);
      const first = seen.get(name);
      if (first !== undefined) issues.addAlways([...at, 'services', j, 'name'], `${JSON.stringify(name)} is already the name of services[${first}]; service names are unique per gray`, ErrorCodes.CONFIG_CONFLICT);
      else seen.set(name, j);
    }
    out.push({ name, publicPort: int(so.public_port), allow: allowListAt(so.allow, [...at, 'services', j, 'allow'], issues) });
  }
  return out;
}

/** A gray file's services: `services`, or the single `target` (+ `proxy_protocol`) as `default`. */
export function grayServicesAt(raw: Obj, issues: IssueList, hostPortAt: (v: unknown, segments: PathSegment[]) => HostPort | null): GrayService[] {
  const proxy = (v: unknown): ProxyProtocol => (v === 'v1' || v === 'v2' ? v : 'none');
  const list = obj(raw.services);
  const single = ['target', 'proxy_protocol'].filter((k) => raw[k] !== undefined);
  if (list !== null && single.length > 0) {
    const example = typeof raw.target === 'string' ? `{ target: ${JSON.stringify(raw.target)}${raw.proxy_protocol !== undefined ? `, proxy_protocol: ${String(raw.proxy_protocol)}` : ''} }` : '{ target: "host:port" }';
    issues.addAlways(
      [],
      `has both ${single.join(' and ')} and services; write one form: either ${single.join(' and ')} alone (one service named "${DEFAULT_SERVICE}"), or move ${single.length > 1 ? 'them' : 'it'} into services as ${DEFAULT_SERVICE}: ${example}`,
    );
    return [];
  }
  if (list === null) {
    if (raw.target === undefined) {
      issues.add(['target'], 'required key is missing (or give services, a mapping of name: { target })');
      return [];
    }
    const target = hostPortAt(raw.target, ['target']) ?? { host: '', port: 0 };
    return [{ name: DEFAULT_SERVICE, target, proxyProtocol: proxy(raw.proxy_protocol) }];
  }
  const out: GrayService[] = [];
  for (const [name, s] of Object.entries(list)) {
    const problem = nameProblem(name);
    if (problem !== null) issues.add(['services', name], problem);
    const so = obj(s);
    if (so === null) continue;
    const target = hostPortAt(so.target, ['services', name, 'target']) ?? { host: '', port: 0 };
    out.push({ name, target, proxyProtocol: proxy(so.proxy_protocol) });
  }
  return out;
}
