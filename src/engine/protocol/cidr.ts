// Allow-lists: client source networks in CIDR notation, IPv4 and IPv6. An IPv4-mapped IPv6
// address (::ffff:a.b.c.d, what a dual-stack listener reports for an IPv4 client) is matched as
// the IPv4 address it carries, so one IPv4 list means the same on either kind of listener.
// The same rule is in the engine (native/allow.cc), which gets the parsed networks as bytes.
import { formatIPv4, formatIPv6, isIPv4Mapped, parseIPv4, parseIPv6 } from './ip-address.js';

export interface Cidr {
  readonly family: 4 | 6;
  /** 4 or 16 bytes, host bits zero. A Uint8Array, not a Buffer: a config loaded in a worker
   *  (config/isolated-load.ts) comes back through structured cloning, which makes Buffers plain. */
  readonly bytes: Uint8Array;
  readonly prefix: number;
  /** As written in the config, for messages and `relayctl show`. */
  readonly text: string;
}

export type CidrParse = { readonly ok: true; readonly value: Cidr } | { readonly ok: false; readonly reason: string };

function maskFrom(bytes: Buffer, prefix: number): Buffer {
  const out = Buffer.from(bytes);
  for (let i = 0; i < out.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] = out[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

/** "203.0.113.0/24", "2001:db8::/32"; a bare address is a network of one address. */
export function parseCidr(text: string): CidrParse {
  const slash = text.indexOf('/');
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? null : text.slice(slash + 1);
  const v4 = parseIPv4(addressText);
  const v6 = v4 === null ? parseIPv6(addressText) : null;
  const bytes = v4 ?? v6;
  if (bytes === null) return { ok: false, reason: 'is not an IPv4 or IPv6 network like "203.0.113.0/24" or "2001:db8::/32"' };
  const family = v4 !== null ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (prefixText !== null) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > max) {
      return { ok: false, reason: `has prefix length ${JSON.stringify(prefixText)}, an IPv${family} network takes 0 to ${max}` };
    }
    prefix = Number(prefixText);
  }
  const network = maskFrom(bytes, prefix);
  if (!network.equals(bytes)) {
    const shown = family === 4 ? formatIPv4(network) : formatIPv6(network);
    return { ok: false, reason: `has bits set after its /${prefix} prefix; the network is "${shown}/${prefix}"` };
  }
  return { ok: true, value: { family, bytes, prefix, text } };
}

/** An address as a socket reports it, in binary: IPv4-mapped IPv6 becomes IPv4; a zone id is dropped. */
export function addressForMatch(address: string): { family: 4 | 6; bytes: Buffer } | null {
  const v4 = parseIPv4(address);
  if (v4 !== null) return { family: 4, bytes: v4 };
  const zone = address.indexOf('%');
  const v6 = parseIPv6(zone >= 0 ? address.slice(0, zone) : address);
  if (v6 === null) return null;
  if (isIPv4Mapped(v6)) return { family: 4, bytes: Buffer.from(v6.subarray(12)) };
  return { family: 6, bytes: v6 };
}

function inNetwork(address: Uint8Array, cidr: Cidr): boolean {
  const whole = cidr.prefix >> 3;
  for (let i = 0; i < whole; i++) if (address[i] !== cidr.bytes[i]) return false;
  const rest = cidr.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (address[whole]! & mask) === cidr.bytes[whole];
}

/** An empty list allows everyone; otherwise the address must be in one of the networks. */
export function allowed(list: readonly Cidr[], address: string | undefined): boolean {
  if (list.length === 0) return true;
  if (address === undefined) return false;
  const a = addressForMatch(address);
  if (a === null) return false;
  return list.some((c) => c.family === a.family && inNetwork(a.bytes, c));
}

/** A list as the engine takes it (native/allow.cc): per network, family, prefix length and 16
 *  address bytes. */
export function encodeAllowList(list: readonly Cidr[]): Buffer {
  const out = Buffer.alloc(list.length * 18);
  list.forEach((c, i) => {
    out[i * 18] = c.family;
    out[i * 18 + 1] = c.prefix;
    out.set(c.bytes, i * 18 + 2);
  });
  return out;
}
