// Mutual authentication without a CA. Both sides hold the gray's secret; both derive keys from it
// and from the TLS session's exported keying material (EKM, RFC 5705/8446 exporter). A
// man-in-the-middle terminating TLS sees two different EKMs, so proofs it relays are wrong on the
// other leg and it cannot compute its own without the secret.
//
// HKDF(secret as input key material, EKM as salt, label + NUL + gray id as info): distinct labels
// give independent keys (a gray proof can never be replayed as a white proof), and binding the id
// makes a proof for one gray useless for another even if two grays shared a secret.

import { hkdfSync, timingSafeEqual } from 'node:crypto';
import { ErrorCodes, RelayError } from '../../errors.js';
import { decodeBase64urlExact, encodeBase64url } from './base64url.js';
import { GRAY_ID_PATTERN, PROOF_BYTES } from './constants.js';

/** The engine calls `tlsSocket.exportKeyingMaterial(EKM_BYTES, EKM_LABEL)`; RFC 5705 requires
 *  private labels to start with "EXPORTER". */
export const EKM_LABEL = 'EXPORTER-relay-v1';
export const EKM_BYTES = 32;

/** Secrets under 128 bits are refused by the config layer; refusing here too means a dummy or
 *  test key can never be weaker than what the config accepts. */
export const SECRET_MIN_BYTES = 16;

const KEY_BYTES = 32;

const INFO_WHITE_PROOF = 'relay/v1 white-proof\0';
const INFO_GRAY_PROOF = 'relay/v1 gray-proof\0';
const INFO_DATA_KEY = 'relay/v1 data-key\0';

export interface SessionKeys {
  /** Sent by the white in WHITE_PROOF. */
  whiteProof: Buffer;
  /** Sent by the gray in GRAY_PROOF. */
  grayProof: Buffer;
  /** Keys the HMAC tag of data-connection preambles. Never sent. */
  dataKey: Buffer;
}

export function deriveSessionKeys(secret: Buffer, ekm: Buffer, grayId: string): SessionKeys {
  if (secret.length < SECRET_MIN_BYTES) {
    throw new RelayError(
      ErrorCodes.SECRET_WEAK,
      `secret is ${secret.length * 8} bits, minimum is ${SECRET_MIN_BYTES * 8} bits`,
      { details: { bits: secret.length * 8, minBits: SECRET_MIN_BYTES * 8 } },
    );
  }
  if (ekm.length !== EKM_BYTES) {
    throw new RelayError(ErrorCodes.INTERNAL, `keying material is ${ekm.length} bytes, expected ${EKM_BYTES}`);
  }
  // The pattern excludes NUL, so "label\0id" splits one way only.
  if (!GRAY_ID_PATTERN.test(grayId)) {
    throw new RelayError(ErrorCodes.INTERNAL, `gray id ${JSON.stringify(grayId.slice(0, 80))} does not match ${GRAY_ID_PATTERN}`);
  }
  const derive = (label: string): Buffer =>
    Buffer.from(hkdfSync('sha256', secret, ekm, Buffer.from(label + grayId, 'utf8'), KEY_BYTES));
  return {
    whiteProof: derive(INFO_WHITE_PROOF),
    grayProof: derive(INFO_GRAY_PROOF),
    dataKey: derive(INFO_DATA_KEY),
  };
}

/** Constant-time comparison of a received proof against the expected one. The length is public
 *  (it is fixed by the protocol), so checking it first leaks nothing. */
export function proofsEqual(expected: Buffer, received: Buffer): boolean {
  return expected.length === received.length && timingSafeEqual(expected, received);
}

export function encodeProof(proof: Buffer): string {
  if (proof.length !== PROOF_BYTES) {
    throw new RelayError(ErrorCodes.INTERNAL, `proof is ${proof.length} bytes, expected ${PROOF_BYTES}`);
  }
  return encodeBase64url(proof);
}

export function decodeProof(text: string): Buffer {
  const proof = decodeBase64urlExact(text, PROOF_BYTES);
  if (proof === null) {
    throw new RelayError(
      ErrorCodes.MESSAGE_INVALID,
      `proof must be canonical unpadded base64url of ${PROOF_BYTES} bytes, got ${typeof text === 'string' ? `${text.length} chars` : typeof text}`,
    );
  }
  return proof;
}
