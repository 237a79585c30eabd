// Configs built in a program with the keys of a file (whiteConfigFromObject, grayConfigFromObject,
// and the embedding API's startWhite/startGray through them): the same schema and rules as a file,
// port 0 where a file may not have it, the caller's object left as it was.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startGray, startWhite } from '../../src/api.js';
import { checkedKind, grayConfigFromObject, parseWhiteConfig, whiteConfigFromObject } from '../../src/config/load.js';
import { generateSecret } from '../../src/config/secret.js';
import { ErrorCodes, isRelayError } from '../../src/errors.js';

const SECRET = generateSecret();

test('an object config may listen on port 0; the same keys in a file may not', async () => {
  const input = { control: { listen: '127.0.0.1:0' }, metrics: { listen: '127.0.0.1:0' }, admin: { socket: null }, grays: [{ id: 'a', secret: SECRET, public_port: 0, data_port: 0 }] };
  const config = await whiteConfigFromObject(input);
  assert.deepEqual(config.control, { host: '127.0.0.1', port: 0 });
  assert.deepEqual(config.metrics, { host: '127.0.0.1', port: 0 });
  assert.equal(config.grays[0]!.services[0]!.publicPort, 0);
  assert.equal(checkedKind(config), 'white');
  const yaml = `control: { listen: "127.0.0.1:0" }\nadmin: { socket: null }\ngrays:\n  - { id: a, secret: "${SECRET}", public_port: 0, data_port: 0 }\n`;
  await assert.rejects(parseWhiteConfig(yaml, null), (err: unknown) => {
    assert.ok(isRelayError(err, ErrorCodes.CONFIG_INVALID), String(err));
    assert.match(err.message, /grays\[0\]\.public_port: 0 is below the minimum 1/);
    assert.match(err.message, /control\.listen: "127\.0\.0\.1:0" port 0 is outside 1\.\.65535/);
    return true;
  });
});

test('a gray dials real ports: port 0 for its white or target is refused, for its status listener allowed', async () => {
  const ok = await grayConfigFromObject({ white: '127.0.0.1:7000', id: 'g', secret: SECRET, target: '127.0.0.1:8080', status: { listen: '127.0.0.1:0' } });
  assert.deepEqual(ok.status, { host: '127.0.0.1', port: 0 });
  assert.equal(checkedKind(ok), 'gray');
  await assert.rejects(grayConfigFromObject({ white: '127.0.0.1:0', id: 'g', secret: SECRET, target: '127.0.0.1:0' }), (err: unknown) => {
    assert.ok(isRelayError(err, ErrorCodes.CONFIG_INVALID), String(err));
    assert.match(err.message, /^gray config object: white: "127\.0\.0\.1:0" port 0 is outside 1\.\.65535$/m);
    assert.match(err.message, /^gray config object: target: "127\.0\.0\.1:0" port 0 is outside 1\.\.65535$/m);
    return true;
  });
});

test('the caller\'s object is not changed (defaults go into a copy); what is not plain data is refused', async () => {
  const input = { control: { listen: '127.0.0.1:0' }, grays: [{ id: 'a', secret: SECRET, public_port: 0, data_port: 0 }] };
  const before = structuredClone(input);
  const config = await whiteConfigFromObject(input);
  assert.deepEqual(input, before);
  assert.equal(config.admin.socket?.endsWith('relay-admin.sock'), true, 'the default was filled in');
  assert.ok(Object.isFrozen(config));
  const withFunction = { control: { listen: '127.0.0.1:0', onListen: () => {} } };
  await assert.rejects(whiteConfigFromObject(withFunction as never), (err: unknown) => isRelayError(err, ErrorCodes.CONFIG_INVALID) && /holds something other than plain data/.test(err.message));
});

test('an object that is not a config is refused with every problem listed, and nothing starts', async () => {
  await assert.rejects(startWhite({ control: { listen: 'nowhere' }, grays: [{ id: 'bad id!', secret: 'short', public_port: 1, data_port: 1 }] } as never), (err: unknown) => {
    assert.ok(isRelayError(err), String(err));
    const lines = err.message.split('\n');
    assert.ok(lines.some((l) => l.startsWith('white config object: control.listen: "nowhere"')), err.message);
    assert.ok(lines.some((l) => l.startsWith('white config object: grays[0].id:')), err.message);
    return true;
  });
});

test('a loaded config of the other kind is refused with a usage error', async () => {
  const gray = await grayConfigFromObject({ white: '127.0.0.1:7000', id: 'g', secret: SECRET, target: '127.0.0.1:8080' });
  const white = await whiteConfigFromObject({ control: { listen: '127.0.0.1:0' }, admin: { socket: null } });
  await assert.rejects(startWhite(gray as never), (err: unknown) => isRelayError(err, ErrorCodes.USAGE) && err.message === 'a gray config was given where a white config is wanted');
  await assert.rejects(startGray(white as never), (err: unknown) => isRelayError(err, ErrorCodes.USAGE) && err.message === 'a white config was given where a gray config is wanted');
});
