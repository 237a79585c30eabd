// Secrets: generation, both base64 alphabets, the 128-bit floor, and the file/env sources with
// their refusals (group/other-readable file, missing file, unset variable).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, RelayError } from '../../src/errors.js';
import { parseWhiteConfig, parseGrayConfig } from '../../src/config/load.js';
import { decodeSecret, generateSecret } from '../../src/config/secret.js';

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'relay-secret-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function loadError(promise: Promise<unknown>): Promise<RelayError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof RelayError, String(err));
    return err;
  }
  assert.fail('expected a failure');
}

function gray(secretLine: string): string {
  return `white: "w:7000"\nid: a\n${secretLine}\ntarget: "127.0.0.1:80"\n`;
}

test('generateSecret gives 32 random bytes as base64url', () => {
  const a = generateSecret();
  const b = generateSecret();
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, b);
  assert.equal(decodeSecret(a, 'x').length, 32);
});

test('decodeSecret accepts base64url and standard base64, with or without padding', () => {
  const bytes = Buffer.from('fbff00112233445566778899aabbccddeeff', 'hex');
  assert.ok(decodeSecret(bytes.toString('base64url'), 'x').equals(bytes));
  assert.ok(decodeSecret(bytes.toString('base64'), 'x').equals(bytes));
  const sixteen = Buffer.alloc(16, 0xfb);
  assert.equal(sixteen.toString('base64').endsWith('=='), true);
  assert.ok(decodeSecret(sixteen.toString('base64'), 'x').equals(sixteen));
  assert.ok(decodeSecret(`  ${sixteen.toString('base64url')}\n`, 'x').equals(sixteen), 'surrounding whitespace is ignored');
});

test('decodeSecret refuses short secrets with SECRET_WEAK, stating the length and the floor', () => {
  assert.throws(
    () => decodeSecret(Buffer.alloc(8).toString('base64url'), 'grays[0].secret'),
    (err: unknown) =>
      err instanceof RelayError &&
      err.code === ErrorCodes.SECRET_WEAK &&
      err.message === 'grays[0].secret: decodes to 8 bytes, at least 16 (128 bits) required',
  );
  assert.throws(() => decodeSecret(Buffer.alloc(15).toString('base64url'), 'x'), { code: ErrorCodes.SECRET_WEAK });
  assert.equal(decodeSecret(Buffer.alloc(16).toString('base64url'), 'x').length, 16);
});

test('decodeSecret refuses text that is not base64 without echoing it', () => {
  for (const bad of ['not base64!', 'AAAA-AAAA+AAAAAAAAAAAAAAAAAAAA', 'A'.repeat(21), 'AAAAAAAAAAAAAAAAAAAAAA=', 'AAAAAAAAAAAAAAAAAAAAAAAA==', '====']) {
    assert.throws(
      () => decodeSecret(bad, 'grays[0].secret'),
      (err: unknown) => err instanceof RelayError && err.message === 'grays[0].secret: is not base64url (or base64) text' && !err.message.includes(bad),
      bad,
    );
  }
});

test('a weak inline secret in a config is SECRET_WEAK with the path', async () => {
  const err = await loadError(parseGrayConfig(gray(`secret: "${Buffer.alloc(8).toString('base64url')}"`), 'g.yaml'));
  assert.equal(err.code, ErrorCodes.SECRET_WEAK);
  assert.equal(err.message, 'g.yaml: secret: decodes to 8 bytes, at least 16 (128 bits) required');
});

test('secret_file: read and trimmed; 0644 refused; missing refused; empty refused', async (t) => {
  const dir = await tempDir(t);
  const secret = generateSecret();
  const good = join(dir, 'good.key');
  await writeFile(good, `${secret}\n`);
  await chmod(good, 0o600);
  const c = await parseGrayConfig(gray('secret_file: good.key'), join(dir, 'gray.yaml'));
  assert.ok(c.secret.equals(Buffer.from(secret, 'base64url')));

  const open = join(dir, 'open.key');
  await writeFile(open, secret);
  await chmod(open, 0o644);
  const e1 = await loadError(parseGrayConfig(gray('secret_file: open.key'), join(dir, 'gray.yaml')));
  assert.equal(e1.code, ErrorCodes.SECRET_SOURCE);
  assert.equal(e1.message, `${join(dir, 'gray.yaml')}: secret_file: ${open} is accessible by group or others (mode 0644); allow only its owner: chmod 600 ${open}`);

  const e2 = await loadError(parseGrayConfig(gray('secret_file: missing.key'), 'g.yaml'));
  assert.equal(e2.code, ErrorCodes.SECRET_SOURCE);
  assert.equal(e2.message, `g.yaml: secret_file: ${join(process.cwd(), 'missing.key')} does not exist`);

  const empty = join(dir, 'empty.key');
  await writeFile(empty, '\n', { mode: 0o600 });
  await chmod(empty, 0o600);
  const e3 = await loadError(parseGrayConfig(gray(`secret_file: ${empty}`), 'g.yaml'));
  assert.equal(e3.message, `g.yaml: secret_file: ${empty} is empty`);

  const weak = join(dir, 'weak.key');
  await writeFile(weak, Buffer.alloc(4).toString('base64url'));
  await chmod(weak, 0o600);
  const e4 = await loadError(parseGrayConfig(gray(`secret_file: ${weak}`), 'g.yaml'));
  assert.equal(e4.code, ErrorCodes.SECRET_WEAK);
  assert.equal(e4.message, 'g.yaml: secret_file: decodes to 4 bytes, at least 16 (128 bits) required');
});

test('secret_env: read from the environment; unset or empty refused', async () => {
  const secret = generateSecret();
  const c = await parseGrayConfig(gray('secret_env: RELAY_T_SECRET'), null, { env: { RELAY_T_SECRET: secret } });
  assert.ok(c.secret.equals(Buffer.from(secret, 'base64url')));

  const e1 = await loadError(parseGrayConfig(gray('secret_env: RELAY_T_SECRET'), 'g.yaml', { env: {} }));
  assert.equal(e1.code, ErrorCodes.SECRET_SOURCE);
  assert.equal(e1.message, 'g.yaml: secret_env: environment variable RELAY_T_SECRET is not set');
  const e2 = await loadError(parseGrayConfig(gray('secret_env: RELAY_T_SECRET'), 'g.yaml', { env: { RELAY_T_SECRET: ' ' } }));
  assert.equal(e2.message, 'g.yaml: secret_env: environment variable RELAY_T_SECRET is empty');

  // process.env is the default.
  process.env.RELAY_T_SECRET_DEFAULT = secret;
  try {
    const d = await parseGrayConfig(gray('secret_env: RELAY_T_SECRET_DEFAULT'), null);
    assert.ok(d.secret.equals(Buffer.from(secret, 'base64url')));
  } finally {
    delete process.env.RELAY_T_SECRET_DEFAULT;
  }
});

test('several secret problems of one kind keep that kind as the error code', async () => {
  const weak = Buffer.alloc(8).toString('base64url');
  const err = await loadError(
    parseWhiteConfig(
      `control: { listen: "0.0.0.0:7000" }\ngrays:\n  - { id: a, secret: "${weak}", public_port: 20000, data_port: 20001 }\n  - { id: b, secret: "${weak}", public_port: 20002, data_port: 20003 }\n`,
      'w.yaml',
    ),
  );
  assert.equal(err.code, ErrorCodes.SECRET_WEAK);
  assert.deepEqual(err.details.errors, [
    'w.yaml: grays[0].secret: decodes to 8 bytes, at least 16 (128 bits) required',
    'w.yaml: grays[1].secret: decodes to 8 bytes, at least 16 (128 bits) required',
  ]);
});

test('a hook secret may also be written as Standard Webhooks writes it (whsec_ and base64); a gray secret may not', async () => {
  const key = Buffer.from('00112233445566778899aabbccddeeff0011223344556677', 'hex');
  const whsec = `whsec_${key.toString('base64')}`;
  const white = await parseWhiteConfig(
    `control: { listen: "127.0.0.1:7000" }\nhooks:\n  - url: "http://127.0.0.1:9000/"\n    secret: "${whsec}"\nauthorize:\n  url: "http://127.0.0.1:9001/"\n  client_connect: true\n  secret: "${whsec}"\n`,
    '/etc/relay/w.yaml',
  );
  assert.ok(white.hooks[0]?.secret?.equals(key), 'hook secret decoded from whsec_');
  assert.ok(white.authorize?.secret?.equals(key), 'authorize secret decoded from whsec_');
  const both = await parseWhiteConfig(`control: { listen: "127.0.0.1:7000" }\nhooks:\n  - url: "http://127.0.0.1:9000/"\n    secret: "${key.toString('base64url')}"\n`, '/etc/relay/w.yaml');
  assert.ok(both.hooks[0]?.secret?.equals(key), "today's form still works");
  const weak = await loadError(parseWhiteConfig(`control: { listen: "127.0.0.1:7000" }\nhooks:\n  - url: "http://127.0.0.1:9000/"\n    secret: "whsec_${Buffer.alloc(8).toString('base64')}"\n`, '/etc/relay/w.yaml'));
  assert.match(weak.message, /hooks\[0\]\.secret: decodes to 8 bytes/);
  const err = await loadError(parseGrayConfig(gray(`secret: "${whsec}"`), '/etc/relay/g.yaml'));
  assert.match(err.message, /secret: is not base64url \(or base64\) text/);
});
