// PROXY protocol headers (HAProxy spec, versions 1 and 2) that the gray may send to its local
// service before the client's bytes, so the service sees the real client address instead of the
// gray's. Only the PROXY command with TCP over IPv4/IPv6 is produced: relay always knows both
// endpoints of a TCP client, so LOCAL / UNKNOWN / UDP / TLVs are never needed.

import { clientAddressBytes, type ClientAddressInfo } from './start-header.js';
import { formatIPv4, formatIPv6 } from './ip-address.js';

/** The 12-byte v2 signature; chosen by the spec so it can never start a valid v1 line or HTTP. */
export const PROXY_V2_SIGNATURE: Buffer = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
/** High nibble: protocol version 2; low nibble: command PROXY (1). */
const V2_VERSION_PROXY = 0x21;
/** High nibble: address family (1 = AF_INET, 2 = AF_INET6); low nibble: 1 = STREAM. */
const V2_TCP_OVER_IPV4 = 0x11;
const V2_TCP_OVER_IPV6 = 0x21;
/** Address block sizes: two addresses and two u16 ports. */
const V2_IPV4_BLOCK = 4 + 4 + 2 + 2;
const V2_IPV6_BLOCK = 16 + 16 + 2 + 2;

/** The header the service was configured to get before the client's bytes, if any. */
export function proxyHeaderFor(version: 'none' | 'v1' | 'v2', info: ClientAddressInfo): Buffer | undefined {
  if (version === 'v1') return encodeProxyV1(info);
  if (version === 'v2') return encodeProxyV2(info);
  return undefined;
}

/** "PROXY TCP4 <src> <dst> <sport> <dport>\r\n". Addresses are re-printed in canonical form, which
 *  also guarantees the line holds no spaces or CR/LF from the input. */
export function encodeProxyV1(info: ClientAddressInfo): Buffer {
  const { src, dst } = clientAddressBytes(info);
  const format = info.family === 4 ? formatIPv4 : formatIPv6;
  const line = `PROXY TCP${info.family} ${format(src)} ${format(dst)} ${info.srcPort} ${info.dstPort}\r\n`;
  return Buffer.from(line, 'latin1');
}

export function encodeProxyV2(info: ClientAddressInfo): Buffer {
  const { src, dst } = clientAddressBytes(info);
  const block = info.family === 4 ? V2_IPV4_BLOCK : V2_IPV6_BLOCK;
  const header = Buffer.alloc(PROXY_V2_SIGNATURE.length + 4 + block);
  PROXY_V2_SIGNATURE.copy(header, 0);
  let offset = PROXY_V2_SIGNATURE.length;
  header[offset++] = V2_VERSION_PROXY;
  header[offset++] = info.family === 4 ? V2_TCP_OVER_IPV4 : V2_TCP_OVER_IPV6;
  header.writeUInt16BE(block, offset); // length of what follows the 16-byte fixed part
  offset += 2;
  src.copy(header, offset);
  offset += src.length;
  dst.copy(header, offset);
  offset += dst.length;
  header.writeUInt16BE(info.srcPort, offset);
  header.writeUInt16BE(info.dstPort, offset + 2);
  return header;
}
