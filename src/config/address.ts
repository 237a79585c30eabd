// host:port parsing. IPv6 literals need brackets ("[::1]:7000"): without them the last colon would
// be ambiguous. Hosts are kept without brackets, the form net.listen and net.connect take.
import { isIP, isIPv4, isIPv6 } from 'node:net';
import type { HostPort } from './types.js';

// RFC 1123 labels, plus underscore, which container platforms use in service names.
const HOSTNAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

export type ParseResult<T> = { ok: true; value: T } | { ok: false; reason: string };

/** An IPv4/IPv6 literal or a DNS name; brackets around IPv6 are accepted and removed. */
export function parseHost(text: string): ParseResult<string> {
  let host = text;
  if (host.startsWith('[') && host.endsWith(']')) {
    host = host.slice(1, -1);
    if (!isIPv6(host.split('%')[0] ?? '')) return { ok: false, reason: 'has brackets but no IPv6 address inside' };
    return { ok: true, value: host };
  }
  if (isIP(host.split('%')[0] ?? '') !== 0) return { ok: true, value: host };
  if (host.includes(':')) return { ok: false, reason: 'looks like an IPv6 address; write it in brackets, e.g. [::1]:7000' };
  // A dotted all-digit name is a mistyped IPv4 address, not a host name.
  if (/^[0-9.]+$/.test(host)) return { ok: false, reason: 'is not a valid IPv4 address' };
  if (!HOSTNAME.test(host)) return { ok: false, reason: 'is not a valid host name or IP address' };
  return { ok: true, value: host };
}

/** allowZero: port 0 (the OS chooses) is accepted, for a listening address built in a program. */
export function parsePort(text: string, allowZero = false): ParseResult<number> {
  if (!/^[0-9]{1,5}$/.test(text)) return { ok: false, reason: 'has no numeric port' };
  const port = Number(text);
  const min = allowZero ? 0 : 1;
  if (port < min || port > 65535) return { ok: false, reason: `port ${port} is outside ${min}..65535` };
  return { ok: true, value: port };
}

/** "host:port" or "[v6]:port". */
export function parseHostPort(text: string, allowZero = false): ParseResult<HostPort> {
  let hostText: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return { ok: false, reason: 'is not [ipv6]:port' };
    hostText = text.slice(0, close + 1);
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return { ok: false, reason: 'has no port; write host:port' };
    hostText = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (hostText.includes(':')) return { ok: false, reason: 'looks like an IPv6 address; write it in brackets, e.g. [::1]:7000' };
  }
  if (hostText === '') return { ok: false, reason: 'has no host' };
  const host = parseHost(hostText);
  if (!host.ok) return host;
  const port = parsePort(portText, allowZero);
  if (!port.ok) return port;
  return { ok: true, value: { host: host.value, port: port.value } };
}

/** "host:port" again, with brackets for IPv6. */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIPv4(host)) return host.startsWith('127.');
  if (isIPv6(host)) return host === '::1' || /^::ffff:127\./i.test(host) || /^0{0,4}(:0{0,4}){6}:0{0,3}1$/.test(host);
  return false;
}
