// Services in both files: the list form, the single form as service `default`, and every invalid
// form once, each with the message the user sees.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes, RelayError } from '../../src/errors.js';
import { parseGrayConfig, parseWhiteConfig } from '../../src/config/load.js';
import { generateSecret } from '../../src/config/secret.js';

const S = generateSecret();

async function errorsOf(promise: Promise<unknown>): Promise<{ errors: string[]; code: string }> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof RelayError, String(err));
    return { errors: err.details.errors as string[], code: err.code };
  }
  assert.fail('expected the config to be refused');
}

function white(gray: string): string {
  return `control: { listen: "0.0.0.0:7000" }\ngrays:\n  - id: nas\n    secret: "${S}"\n    data_port: 20001\n${gray}`;
}

function gray(rest: string): string {
  return `white: "w.example:7000"\nid: nas\nsecret: "${S}"\n${rest}`;
}

test('a white entry with services loads them in order, allow-lists parsed (IPv4, IPv6, one host)', async () => {
  const c = await parseWhiteConfig(
    white(`    services:\n      - { name: ssh, public_port: 20022, allow: ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"] }\n      - { name: web-2, public_port: 20080 }\n`),
    'w.yaml',
  );
  const g = c.grays[0]!;
  assert.deepEqual(
    g.services.map((s) => [s.name, s.publicPort, s.allow.map((a) => `${a.family}:${a.prefix}:${a.text}`)]),
    [
      ['ssh', 20022, ['4:24:203.0.113.0/24', '6:32:2001:db8::/32', '4:32:198.51.100.7']],
      ['web-2', 20080, []],
    ],
  );
});

test('the single forms are the service "default" in both files', async () => {
  const c = await parseWhiteConfig(white('    public_port: 20000\n'), 'w.yaml');
  assert.deepEqual(c.grays[0]!.services, [{ name: 'default', publicPort: 20000, allow: [] }]);
  const g = await parseGrayConfig(gray('target: "127.0.0.1:22"\nproxy_protocol: v1\n'), 'g.yaml');
  assert.deepEqual(g.services, [{ name: 'default', target: { host: '127.0.0.1', port: 22 }, proxyProtocol: 'v1' }]);
});

test('a gray file with services: each its target and PROXY setting, none by default', async () => {
  const g = await parseGrayConfig(gray('services:\n  ssh: { target: "127.0.0.1:22" }\n  web: { target: "[::1]:8080", proxy_protocol: v2 }\n'), 'g.yaml');
  assert.deepEqual(g.services, [
    { name: 'ssh', target: { host: '127.0.0.1', port: 22 }, proxyProtocol: 'none' },
    { name: 'web', target: { host: '::1', port: 8080 }, proxyProtocol: 'v2' },
  ]);
});

const WHITE_CASES: Array<[string, string, string]> = [
  [
    'both forms',
    '    public_port: 20000\n    services: [{ name: ssh, public_port: 20022 }]\n',
    'w.yaml: grays[0]: has both public_port and services; write one form: either public_port alone (one service named "default"), or move it into the list as services: [{ name: default, public_port: 20000 }]',
  ],
  ['neither form', '', 'w.yaml: grays[0].public_port: required key is missing (or give services, a list of { name, public_port })'],
  ['a name out of the alphabet', '    services: [{ name: SSH, public_port: 20022 }]\n', 'w.yaml: grays[0].services[0].name: "SSH" is not a service name: 1 to 32 of a-z 0-9 -, unique per gray'],
  ['a name too long', `    services: [{ name: ${'a'.repeat(33)}, public_port: 20022 }]\n`, `w.yaml: grays[0].services[0].name: "${'a'.repeat(33)}" is not a service name: 1 to 32 of a-z 0-9 -, unique per gray`],
  ['an empty list', '    services: []\n', 'w.yaml: grays[0].services: has 0 items, at least 1 required'],
  ['more than 64 services', `    services: [${Array.from({ length: 65 }, (_, i) => `{ name: s${i}, public_port: ${21000 + i} }`).join(', ')}]\n`, 'w.yaml: grays[0].services: has 65 items, at most 64 allowed'],
  ['a service without a port', '    services: [{ name: ssh }]\n', 'w.yaml: grays[0].services[0].public_port: required key is missing'],
  ['an unknown key in a service', '    services: [{ name: ssh, public_port: 20022, target: "x:1" }]\n', 'w.yaml: grays[0].services[0].target: unknown key'],
  ['an allow entry that is not an address', '    services: [{ name: ssh, public_port: 20022, allow: ["10.0.0.0/8", "office"] }]\n', 'w.yaml: grays[0].services[0].allow[1]: "office" is not an IPv4 or IPv6 network like "203.0.113.0/24" or "2001:db8::/32"'],
  ['an IPv4 prefix over 32', '    services: [{ name: ssh, public_port: 20022, allow: ["10.0.0.0/33"] }]\n', 'w.yaml: grays[0].services[0].allow[0]: "10.0.0.0/33" has prefix length "33", an IPv4 network takes 0 to 32'],
  ['host bits set (IPv4)', '    services: [{ name: ssh, public_port: 20022, allow: ["203.0.113.9/24"] }]\n', 'w.yaml: grays[0].services[0].allow[0]: "203.0.113.9/24" has bits set after its /24 prefix; the network is "203.0.113.0/24"'],
  ['host bits set (IPv6)', '    services: [{ name: ssh, public_port: 20022, allow: ["2001:db8::1/32"] }]\n', 'w.yaml: grays[0].services[0].allow[0]: "2001:db8::1/32" has bits set after its /32 prefix; the network is "2001:db8::/32"'],
  ['a prefix that is not a number', '    services: [{ name: ssh, public_port: 20022, allow: ["::/x"] }]\n', 'w.yaml: grays[0].services[0].allow[0]: "::/x" has prefix length "x", an IPv6 network takes 0 to 128'],
];

for (const [what, yaml, message] of WHITE_CASES) {
  test(`white services: ${what} is refused with its message`, async () => {
    const { errors } = await errorsOf(parseWhiteConfig(white(yaml), 'w.yaml'));
    assert.deepEqual(errors, [message]);
  });
}

test('white services: a name twice in one gray is a conflict; the same name in two grays is fine', async () => {
  const { errors, code } = await errorsOf(parseWhiteConfig(white('    services: [{ name: ssh, public_port: 20022 }, { name: ssh, public_port: 20023 }]\n'), 'w.yaml'));
  assert.deepEqual(errors, ['w.yaml: grays[0].services[1].name: "ssh" is already the name of services[0]; service names are unique per gray']);
  assert.equal(code, ErrorCodes.CONFIG_CONFLICT);
  const two = `${white('    services: [{ name: ssh, public_port: 20022 }]\n')}  - id: other\n    secret: "${S}"\n    data_port: 20002\n    services: [{ name: ssh, public_port: 20023 }]\n`;
  assert.equal((await parseWhiteConfig(two, 'w.yaml')).grays.length, 2);
});

test('white services: two services on one port clash, named by service', async () => {
  const { errors } = await errorsOf(parseWhiteConfig(white('    services: [{ name: ssh, public_port: 20022 }, { name: web, public_port: 20022 }]\n'), 'w.yaml'));
  assert.equal(errors.length, 1);
  assert.match(errors[0]!, /^w\.yaml: grays\[0\]\.services\[1\]\.public_port: 20022 is already the public_port of service "ssh" of grays\[0\]/);
});

const GRAY_CASES: Array<[string, string, string]> = [
  [
    'both forms',
    'target: "127.0.0.1:22"\nproxy_protocol: v2\nservices:\n  ssh: { target: "127.0.0.1:22" }\n',
    'g.yaml: has both target and proxy_protocol and services; write one form: either target and proxy_protocol alone (one service named "default"), or move them into services as default: { target: "127.0.0.1:22", proxy_protocol: v2 }',
  ],
  ['neither form', '', 'g.yaml: target: required key is missing (or give services, a mapping of name: { target })'],
  ['a name out of the alphabet', 'services:\n  Web_1: { target: "127.0.0.1:80" }\n', 'g.yaml: services.Web_1: "Web_1" is not a service name: 1 to 32 of a-z 0-9 -'],
  ['an empty mapping', 'services: {}\n', 'g.yaml: services: has 0 entries, at least 1 required'],
  ['more than 64 services', `services:\n${Array.from({ length: 65 }, (_, i) => `  s${i}: { target: "127.0.0.1:${1000 + i}" }\n`).join('')}`, 'g.yaml: services: has 65 entries, at most 64 allowed'],
  ['a service without a target', 'services:\n  ssh: { proxy_protocol: v1 }\n', 'g.yaml: services.ssh.target: required key is missing'],
  ['a bad target', 'services:\n  ssh: { target: "127.0.0.1" }\n', 'g.yaml: services.ssh.target: "127.0.0.1" is not a host:port address like "white.example.com:7000" or "[2001:db8::1]:7000"'],
  ['a bad PROXY setting', 'services:\n  ssh: { target: "127.0.0.1:22", proxy_protocol: v3 }\n', 'g.yaml: services.ssh.proxy_protocol: "v3" is not one of "none", "v1", "v2"'],
  ['an unknown key in a service', 'services:\n  ssh: { target: "127.0.0.1:22", allow: [] }\n', 'g.yaml: services.ssh.allow: unknown key'],
];

for (const [what, yaml, message] of GRAY_CASES) {
  test(`gray services: ${what} is refused with its message`, async () => {
    const { errors } = await errorsOf(parseGrayConfig(gray(yaml), 'g.yaml'));
    assert.deepEqual(errors, [message]);
  });
}
