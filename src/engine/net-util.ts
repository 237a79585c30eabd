// Small address helpers shared by both sides.

/** `::ffff:1.2.3.4` and `1.2.3.4` are the same peer; compare source addresses in this form. */
export function normalizeIp(address: string | undefined): string {
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
