// Builds the white's TLS identity: a fresh RSA-2048 key (node:crypto) and a self-signed X.509
// certificate built and signed with node-forge, in memory only. Nothing key- or
// certificate-shaped ever touches the disk. Called inside a worker thread (tls-cert-worker.ts)
// so forge never stays loaded in the server.
import { createHash, generateKeyPair, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import forge from 'node-forge';

const generateKeyPairAsync = promisify(generateKeyPair);

export interface InMemoryIdentity {
  readonly keyPem: string;
  readonly certPem: string;
  /** SHA-256 of the DER certificate, colon-separated upper-case hex (the form openssl prints). */
  readonly fingerprint256: string;
}

export async function buildIdentity(commonName: string): Promise<InMemoryIdentity> {
  const { publicKey, privateKey } = await generateKeyPairAsync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey);
  // A positive serial: 16 random bytes with the top bit cleared.
  const serial = randomBytes(16);
  serial[0] = serial[0]! & 0x7f;
  cert.serialNumber = serial.toString('hex');
  const now = new Date();
  cert.validity.notBefore = new Date(now.getTime() - 60_000);
  cert.validity.notAfter = new Date(now.getTime() + 365 * 24 * 3600_000);
  const subject = [{ name: 'commonName', value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.sign(forge.pki.privateKeyFromPem(privateKey), forge.md.sha256.create());
  const certPem = forge.pki.certificateToPem(cert);
  const der = Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes(), 'binary');
  return { keyPem: privateKey, certPem, fingerprint256: formatFingerprint(createHash('sha256').update(der).digest()) };
}

export function formatFingerprint(digest: Buffer): string {
  return digest.toString('hex').toUpperCase().match(/../g)!.join(':');
}
