// relayctl against admin listeners that are not a healthy white: one that closes without
// answering, answers garbage or `{}`, or stalls; and an impostor on the admin TCP port. Each case
// runs the real relayctl as a child process and checks its exit code and its message: relayctl
// never reports a success it did not get, and never hands an impostor anything it can use.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ADMIN_LIMITS, AdminServer, type AdminState } from '../../src/admin/server.js';
import { silentLogger } from '../../src/log.js';
import { tempDir, relayctl, type CliRun } from './harness.js';
import { emptyAdminState } from '../helpers/admin-state.js';

const TOKEN = 'e2e-admin-token-0123456789abcdefghijklmnop';



/** A raw listener standing in for the white; `onConnection` decides how it misbehaves. */
async function fakeAdmin(at: net.ListenOptions, onConnection: (socket: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer(onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(at, () => resolve());
  });
  return server;
}

const closeServer = (server: net.Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()));

/** Reads one HTTP request head (up to the blank line), then runs `then`. */
function afterRequest(socket: net.Socket, then: (head: string) => void): void {
  let text = '';
  const onData = (chunk: Buffer): void => {
    text += chunk.toString('latin1');
    if (text.includes('\r\n\r\n')) {
      socket.off('data', onData);
      then(text);
    }
  };
  socket.on('data', onData);
}

const emptyState = emptyAdminState;

describe('e2e: relayctl against an admin listener that is not a healthy white', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  const servers: net.Server[] = [];
  before(async () => {
    dir = await tempDir();
  });
  after(async () => {
    await Promise.all(servers.map(closeServer));
    await dir.cleanup();
  });

  const onSocket = async (name: string, onConnection: (socket: net.Socket) => void): Promise<string> => {
    const path = join(dir.path, `${name}.sock`);
    servers.push(await fakeAdmin({ path }, onConnection));
    return path;
  };

  for (const command of ['show', 'reload']) {
    it(`${command}: a listener that closes at once (as a white past its connection limit does): exit 1, "closed the connection without answering"`, async () => {
      // resume(): a socket nobody reads from never notices the peer has gone, and would hold close().
      const path = await onSocket(`close-${command}`, (s) => s.end().resume());
      const run = await relayctl([command, '--socket', path]);
      assert.equal(run.code, 1, run.stderr);
      assert.equal(run.stdout, '');
      assert.match(run.stderr, /^relayctl: the admin socket at .* closed the connection without answering \(too many admin connections at once, or not the white\)\n$/);
    });

    it(`${command}: a listener that reads the request and hangs up: exit 1`, async () => {
      const path = await onSocket(`hangup-${command}`, (s) => afterRequest(s, () => s.destroy()));
      const run = await relayctl([command, '--socket', path]);
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr, /closed the connection without answering/);
    });

    it(`${command}: an answer of {} is not taken for a state or an outcome: exit 1, the body quoted`, async () => {
      const path = await onSocket(`empty-${command}`, (s) =>
        afterRequest(s, () => s.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}')),
      );
      const run = await relayctl([command, '--socket', path]);
      assert.equal(run.code, 1, run.stderr);
      assert.equal(run.stdout, '');
      const what = command === 'show' ? 'GET /v1/state: .* is not a state document' : 'POST /v1/reload: .* is not a reload outcome';
      assert.match(run.stderr, new RegExp(`^relayctl: ${what}: "\\{\\}"\\n$`));
    });

    it(`${command}: an answer that is not HTTP: exit 1, "not HTTP"`, async () => {
      const path = await onSocket(`garbage-${command}`, (s) => afterRequest(s, () => s.end('SSH-2.0-OpenSSH_9.6\r\n\r\n')));
      const run = await relayctl([command, '--socket', path]);
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr, /answered with something that is not HTTP/);
    });

    it(`${command}: a listener that never answers: exit 1 once --timeout has passed, and says how long it waited`, async () => {
      const held: net.Socket[] = [];
      const path = await onSocket(`stall-${command}`, (s) => held.push(s));
      const run = await relayctl([command, '--socket', path, '--timeout', '0.5']);
      for (const s of held) s.destroy();
      assert.equal(run.code, 1, run.stderr);
      assert.equal(run.stderr, `relayctl: the white did not answer within 500 ms on the admin socket at ${path}\n`);
    });
  }

  it('a truncated answer (fewer bytes than content-length) is an error, not a short success', async () => {
    const path = await onSocket('cut', (s) =>
      afterRequest(s, () => s.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{"version":"0.1.0",')),
    );
    const run = await relayctl(['show', '--json', '--socket', path]);
    assert.equal(run.code, 1, run.stderr);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /closed the connection in the middle of its answer/);
  });
});

describe('e2e: relayctl against the real admin TCP listener', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let admin: AdminServer;
  let config: string;
  let reloads = 0;
  before(async () => {
    dir = await tempDir();
    admin = new AdminServer(
      { socket: null, tcp: { host: '127.0.0.1', port: 0, token: TOKEN }, metrics: null, logger: silentLogger() },
      {
        state: emptyState,
        reload: async () => {
          reloads += 1;
          return { ok: true, at: Date.now(), error: null };
        },
      },
    );
    await admin.start();
    config = join(dir.path, 'white.yaml');
    const port = admin.addresses.tcp!.port;
    await writeFile(config, `control: { listen: "127.0.0.1:7000" }\nadmin:\n  socket: null\n  tcp: { listen: "127.0.0.1:${port}", token: "${TOKEN}" }\ngrays: []\n`, { mode: 0o600 });
  });
  after(async () => {
    await admin?.close();
    await dir?.cleanup();
  });

  it('show and reload work over TCP with the challenge-response', async () => {
    const show = await relayctl(['show', '--config', config]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^no grays in the config$/m);
    const before = reloads;
    const reload = await relayctl(['reload', '--config', config]);
    assert.equal(reload.code, 0, reload.stderr);
    assert.equal(reload.stderr, 'reloaded: the white runs the file as it is now\n');
    assert.equal(reloads, before + 1);
  });

  it(`past the white's ${ADMIN_LIMITS.maxConnections} admin connections, show and reload fail with exit 1 instead of printing nothing`, async () => {
    const port = admin.addresses.tcp!.port;
    const held: net.Socket[] = [];
    try {
      // Any local user can hold every slot: idle connections that never send a request.
      for (let i = 0; i < ADMIN_LIMITS.maxConnections; i++) {
        const s = net.connect({ host: '127.0.0.1', port });
        s.on('error', () => {});
        await once(s, 'connect');
        held.push(s);
      }
      const before = reloads;
      for (const command of ['show', 'reload']) {
        const run = await relayctl([command, '--config', config]);
        assert.equal(run.code, 1, `${command}: ${run.stderr}`);
        assert.equal(run.stdout, '');
        assert.match(run.stderr, /closed the connection without answering \(too many admin connections at once, or not the white\)/);
      }
      assert.equal(reloads, before);
    } finally {
      for (const s of held) s.destroy();
    }
    // Slots freed: it answers again.
    const show = await relayctl(['show', '--config', config]);
    assert.equal(show.code, 0, show.stderr);
  });
});

describe('e2e: an impostor on the admin TCP port learns nothing it can use', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  before(async () => {
    dir = await tempDir();
  });
  after(async () => {
    await dir.cleanup();
  });

  it('relayctl stops at the challenge; what the impostor captured, replayed on the real white, is refused', async () => {
    // The impostor holds the port while the white is stopped, records every byte and answers the
    // challenge as well as it can without the token.
    const captured: Buffer[] = [];
    const impostor = await fakeAdmin({ host: '127.0.0.1', port: 0 }, (s) => {
      s.on('data', (chunk: Buffer) => captured.push(chunk));
      afterRequest(s, () => {
        const body = JSON.stringify({ nonce: 'A'.repeat(43), proof: 'B'.repeat(43) });
        s.end(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
      });
    });
    const port = (impostor.address() as net.AddressInfo).port;
    const config = join(dir.path, 'white.yaml');
    await writeFile(config, `control: { listen: "127.0.0.1:7000" }\nadmin:\n  socket: null\n  tcp: { listen: "127.0.0.1:${port}", token: "${TOKEN}" }\ngrays: []\n`, { mode: 0o600 });
    for (const command of ['show', 'reload']) {
      const run = await relayctl([command, '--config', config]);
      assert.equal(run.code, 1, run.stderr);
      assert.equal(run.stdout, '');
      assert.match(run.stderr, /did not prove it knows admin\.tcp\.token: it is not this white \(or its token differs\); nothing was sent to it/);
    }
    await closeServer(impostor);

    const seen = Buffer.concat(captured).toString('latin1');
    assert.ok(seen.includes('POST /v1/challenge'), 'the impostor saw the challenge requests');
    assert.ok(!seen.includes(TOKEN), 'the token never crossed the wire');
    assert.ok(!/authorization:/i.test(seen), 'no request authorization was sent to the impostor');
    assert.ok(!/\/v1\/(state|reload)/.test(seen), 'no request was sent beyond the challenge');

    // The real white comes back on the same port; the impostor replays everything it recorded.
    let reloads = 0;
    const white = new AdminServer(
      { socket: null, tcp: { host: '127.0.0.1', port, token: TOKEN }, metrics: null, logger: silentLogger() },
      {
        state: emptyState,
        reload: async () => {
          reloads += 1;
          return { ok: true, at: 1, error: null };
        },
      },
    );
    await white.start();
    try {
      const replayed = await replay(port, Buffer.concat(captured));
      // All it can get is a fresh challenge, which anyone may ask for and which is useless without the token.
      assert.doesNotMatch(replayed, /"version"|"grays"|"ok":true/);
      for (const path of ['/v1/state', '/v1/reload', '/metrics']) {
        const forged = await replay(port, Buffer.from(`${path === '/v1/reload' ? 'POST' : 'GET'} ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`));
        assert.match(forged, /^HTTP\/1\.1 401 /, path);
      }
      assert.equal(reloads, 0);
    } finally {
      await white.close();
    }
  });
});

/** Sends `bytes` on a fresh connection and returns everything that comes back. */
function replay(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (t: string) => (text += t));
    socket.once('error', reject);
    socket.once('close', () => resolve(text));
    socket.end(bytes);
  });
}
