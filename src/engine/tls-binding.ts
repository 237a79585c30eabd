// The value both sides bind their proofs and data key to: keying material exported from this
// TLS session (RFC 5705 / RFC 8446 §7.5). A man in the middle terminating TLS holds two sessions
// with two different values, so proofs made for one are worthless on the other. One function so
// both sides are guaranteed to ask for exactly the same label, length and (empty) context.
import type { TLSSocket } from 'node:tls';
import { EKM_BYTES, EKM_LABEL } from './protocol/auth.js';

const NO_CONTEXT = Buffer.alloc(0);

export function tlsSessionBinding(socket: TLSSocket): Buffer {
  return socket.exportKeyingMaterial(EKM_BYTES, EKM_LABEL, NO_CONTEXT);
}
