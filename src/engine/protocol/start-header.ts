// The start header: what the white writes on a pooled data connection at the moment it pairs it
// with an Internet client. It tells the gray that the connection is now live and who the client is
// (so the gray can hand a PROXY protocol header to its service) and which of the gray's services
// the client came for. Fixed size, 40 bytes:
//
//   version u8 (=2) | family u8 (4|6) | srcPort u16 | dstPort u16 | service u8 | reserved u8 (=0)
//   | srcAddr (16) | dstAddr (16)         (an IPv4 address fills the first 4 bytes, the rest is 0)
//
// service is the index of the service in the gray's table as the gray announced it (SERVICES,
// src/engine/gray/service-table.ts), so the gray never meets an index it did not give out.
//
// Both addresses share one family, like in PROXY v1/v2, so mixed pairs are mapped to IPv6.
//
// Version 3 is the same header on a framed data connection, which carries one client after
// another (native/engine.h, Framing; only engines write and read it, after the gray's HELLO
// offered reuse): the client's bytes follow as frames, and the reserved byte is flags, of which
// one is defined: START_HEADER_CREDIT, the join is worth a successor connection.

import { ErrorCodes, RelayError } from '../../errors.js';
import { SERVICE_SLOTS_MAX } from './constants.js';
import { formatIPv4, formatIPv6, isIPv4Mapped, parseIPv4, parseIPv6 } from './ip-address.js';

export const START_HEADER_BYTES = 40;
export const START_HEADER_VERSION = 2;
export const START_HEADER_VERSION_FRAMED = 3;
export const START_HEADER_CREDIT = 1;
/** service is one byte. */
export const START_HEADER_SERVICES_MAX = SERVICE_SLOTS_MAX;
const ADDRESS_FIELD_BYTES = 16;
const SRC_ADDR_OFFSET = 8;
const DST_ADDR_OFFSET = SRC_ADDR_OFFSET + ADDRESS_FIELD_BYTES; // 24

export interface ClientAddressInfo {
  family: 4 | 6;
  srcAddress: string;
  srcPort: number;
  dstAddress: string;
  dstPort: number;
}

function startHeaderError(message: string, details: Record<string, unknown> = {}): RelayError {
  return new RelayError(ErrorCodes.START_HEADER_INVALID, message, { details });
}

function checkPort(port: unknown, which: string): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw startHeaderError(`client ${which} port ${String(port)} is not an integer in 0..65535`);
  }
  return port;
}

/** Parses an address that must belong to `family`: 4 bytes for IPv4, 16 for IPv6. */
function addressBytes(address: string, family: 4 | 6, which: string): Buffer {
  const bytes = family === 4 ? parseIPv4(address) : parseIPv6(address);
  if (bytes === null) {
    throw startHeaderError(`client ${which} address ${JSON.stringify(address.slice(0, 60))} is not an IPv${family} address`);
  }
  return bytes;
}

/** Validates an info and returns its addresses in binary (4 or 16 bytes each). Shared with the
 *  PROXY protocol encoders so every binary form is produced from the same checks. */
export function clientAddressBytes(info: ClientAddressInfo): { src: Buffer; dst: Buffer } {
  if (info.family !== 4 && info.family !== 6) {
    throw startHeaderError(`address family ${String(info.family)} is not 4 or 6`);
  }
  checkPort(info.srcPort, 'source');
  checkPort(info.dstPort, 'destination');
  return {
    src: addressBytes(info.srcAddress, info.family, 'source'),
    dst: addressBytes(info.dstAddress, info.family, 'destination'),
  };
}

/** A decoded start header: the client's addresses and the gray's index of its service. */
export interface StartHeaderFields extends ClientAddressInfo {
  service: number;
}

export function encodeStartHeader(info: ClientAddressInfo, service: number): Buffer {
  const { src, dst } = clientAddressBytes(info);
  if (!Number.isInteger(service) || service < 0 || service >= START_HEADER_SERVICES_MAX) throw startHeaderError(`service index ${String(service)} is not in 0..${START_HEADER_SERVICES_MAX - 1}`);
  const header = Buffer.alloc(START_HEADER_BYTES); // zero-filled: reserved and unused address bytes
  header[0] = START_HEADER_VERSION;
  header[1] = info.family;
  header.writeUInt16BE(info.srcPort, 2);
  header.writeUInt16BE(info.dstPort, 4);
  header[6] = service;
  src.copy(header, SRC_ADDR_OFFSET);
  dst.copy(header, DST_ADDR_OFFSET);
  return header;
}

/** framed: a version 3 header is allowed (an engine forwards its connection). */
export function decodeStartHeader(buf: Buffer, framed = false): StartHeaderFields {
  if (buf.length !== START_HEADER_BYTES) {
    throw startHeaderError(`start header is ${buf.length} bytes, expected exactly ${START_HEADER_BYTES}`, {
      length: buf.length,
    });
  }
  const version = buf[0]!;
  const isFramed = framed && version === START_HEADER_VERSION_FRAMED;
  if (version !== START_HEADER_VERSION && !isFramed) {
    throw startHeaderError(`start header version ${version} is not supported, expected ${framed ? `${START_HEADER_VERSION} or ${START_HEADER_VERSION_FRAMED}` : START_HEADER_VERSION}`, {
      version,
    });
  }
  const family = buf[1]!;
  if (family !== 4 && family !== 6) {
    throw startHeaderError(`start header address family ${family} is not 4 or 6`, { family });
  }
  const reserved = buf[7]!;
  if (isFramed ? (reserved & ~START_HEADER_CREDIT) !== 0 : reserved !== 0) {
    throw startHeaderError(`start header ${isFramed ? 'flags byte' : 'reserved byte'} is 0x${reserved.toString(16).padStart(2, '0')}, must be ${isFramed ? '0 or 1' : '0'}`);
  }
  const src = buf.subarray(SRC_ADDR_OFFSET, SRC_ADDR_OFFSET + ADDRESS_FIELD_BYTES);
  const dst = buf.subarray(DST_ADDR_OFFSET, DST_ADDR_OFFSET + ADDRESS_FIELD_BYTES);
  if (family === 4) {
    // Padding must be zero so each header has exactly one encoding (no hidden data, no ambiguity).
    for (const [which, field] of [['source', src], ['destination', dst]] as const) {
      if (field.subarray(4).some((byte) => byte !== 0)) {
        throw startHeaderError(`start header ${which} address has non-zero bytes after its 4 IPv4 bytes`);
      }
    }
  }
  return {
    family,
    srcAddress: family === 4 ? formatIPv4(src) : formatIPv6(src),
    srcPort: buf.readUInt16BE(2),
    dstAddress: family === 4 ? formatIPv4(dst) : formatIPv6(dst),
    dstPort: buf.readUInt16BE(4),
    service: buf[6]!,
  };
}

interface NormalizedAddress {
  family: 4 | 6;
  bytes: Buffer;
}

/** Parses an address as a socket reports it: IPv4, IPv6 (zone id dropped: it is local to this
 *  host and means nothing to the gray), or IPv4-mapped IPv6, which becomes plain IPv4. */
function normalizeAddress(address: string | undefined, which: string): NormalizedAddress {
  if (address === undefined || address === '') {
    // A socket reports no address once it is closed; the caller should drop the client.
    throw startHeaderError(`client ${which} address is unknown (socket closed?)`);
  }
  const v4 = parseIPv4(address);
  if (v4 !== null) return { family: 4, bytes: v4 };
  const zone = address.indexOf('%');
  const v6 = parseIPv6(zone >= 0 ? address.slice(0, zone) : address);
  if (v6 === null) {
    throw startHeaderError(`client ${which} address ${JSON.stringify(address.slice(0, 60))} is not an IP address`);
  }
  if (isIPv4Mapped(v6)) return { family: 4, bytes: Buffer.from(v6.subarray(12)) };
  return { family: 6, bytes: v6 };
}

function toIPv6(address: NormalizedAddress): Buffer {
  if (address.family === 6) return address.bytes;
  const mapped = Buffer.alloc(16);
  mapped[10] = 0xff;
  mapped[11] = 0xff;
  address.bytes.copy(mapped, 12);
  return mapped;
}

/** Builds the info from a client socket's remote (src) and local (dst) address and port. */
export function clientAddressInfo(
  src: { address?: string; port?: number },
  dst: { address?: string; port?: number },
): ClientAddressInfo {
  const srcAddress = normalizeAddress(src.address, 'source');
  const dstAddress = normalizeAddress(dst.address, 'destination');
  const srcPort = checkPort(src.port, 'source');
  const dstPort = checkPort(dst.port, 'destination');
  if (srcAddress.family === 4 && dstAddress.family === 4) {
    return {
      family: 4,
      srcAddress: formatIPv4(srcAddress.bytes),
      srcPort,
      dstAddress: formatIPv4(dstAddress.bytes),
      dstPort,
    };
  }
  return {
    family: 6,
    srcAddress: formatIPv6(toIPv6(srcAddress)),
    srcPort,
    dstAddress: formatIPv6(toIPv6(dstAddress)),
    dstPort,
  };
}
