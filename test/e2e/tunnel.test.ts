// End to end with real `relay white` and `relay gray` processes on 127.0.0.1.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { closedBy, roundTrip, startService } from '../helpers/tunnel.js';
import { E2E_ENGINE_THREADS, relayctl, runRelay, tempDir, writeDeployment, type Deployment, type RelayProcess } from './harness.js';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Streams `total` random bytes to an echo service through `port` and checks both digests. */
function bulkEcho(port: number, total: number): Promise<{ sent: string; received: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const sent = createHash('sha256');
    const received = createHash('sha256');
    let receivedBytes = 0;
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunk = 256 * 1024;
    let written = 0;
    const pump = (): void => {
      while (written < total) {
        const piece = randomBytes(Math.min(chunk, total - written));
        sent.update(piece);
        written += piece.length;
        if (!socket.write(piece)) return void socket.once('drain', pump);
      }
      socket.end();
    };
    socket.on('connect', pump);
    socket.on('data', (c: Buffer) => {
      received.update(c);
      receivedBytes += c.length;
    });
    socket.on('end', () => resolve({ sent: sent.digest('hex'), received: received.digest('hex'), bytes: receivedBytes }));
    socket.on('error', reject);
  });
}

// The data-heavy tests run once per data plane: the native splice plane (the default) and the
// JavaScript plane it falls back to.
for (const plane of ['splice', 'js'] as const) describe(`e2e: white and gray processes (${plane} data plane)`, () => {
  const env = { RELAY_DATA_PLANE: plane };
  let dir: { path: string; cleanup: () => Promise<void> };
  let service: Awaited<ReturnType<typeof startService>>;
  let d: Deployment;
  let white: RelayProcess;
  let gray: RelayProcess;

  before(async () => {
    dir = await tempDir();
    service = await startService();
    d = await writeDeployment(dir.path, { targetPort: service.port, pool: 8, adminSocket: `${dir.path}/admin.sock` });
    white = runRelay(['white', '--config', d.whitePath], env);
    await white.waitForMsg('listening');
    gray = runRelay(['gray', '--config', d.grayPath], env);
    await gray.waitForMsg('pool ready');
  });
  after(async () => {
    await gray?.kill();
    await white?.kill();
    service?.server.close();
    await dir?.cleanup();
  });

  it('logs the certificate fingerprint and never writes key material to disk', async () => {
    const listening = await white.waitForMsg('listening');
    assert.match(String(listening.fingerprint), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    const connected = await gray.waitForMsg('gray connected');
    assert.equal(connected.fingerprint, listening.fingerprint, 'the gray sees the certificate the white logged');
    const { readdir, readFile } = await import('node:fs/promises');
    for (const entry of await readdir(dir.path, { withFileTypes: true })) {
      if (!entry.isFile()) continue;  // the admin socket
      const text = await readFile(`${dir.path}/${entry.name}`, 'utf8');
      assert.doesNotMatch(text, /BEGIN (RSA |EC )?(PRIVATE KEY|CERTIFICATE)/);
    }
    const logs = white.lines.map((l) => JSON.stringify(l)).join('\n') + gray.lines.map((l) => JSON.stringify(l)).join('\n');
    assert.ok(!logs.includes(d.secret), 'the secret must never be logged');
  });

  it(`says at startup that the ${plane} plane moves the bytes`, async () => {
    for (const p of [white, gray]) {
      const line = await p.waitForMsg('data plane');
      assert.equal(line.dataPlane, plane);
      if (plane === 'splice') assert.equal(line.threads, Number(E2E_ENGINE_THREADS));
    }
  });

  if (plane === 'splice' && Number(E2E_ENGINE_THREADS) > 1) {
    it('spreads the pairs over the engine threads, as relayctl show --json reports', async () => {
      const clients = await Promise.all(
        Array.from({ length: 16 }, async (_, i) => {
          const c = net.connect({ host: '127.0.0.1', port: d.publicPort });
          const tag = Buffer.from(`held ${String(i).padStart(2, '0')}`);
          c.write(tag);
          await new Promise<void>((resolve, reject) => {
            c.once('data', () => resolve());
            c.once('error', reject);
          });
          return c;
        }),
      );
      try {
        const run = await relayctl(['show', '--json', '--socket', `${dir.path}/admin.sock`]);
        const state = JSON.parse(run.stdout) as { engine: { threads: number; perThread: { pairs: number }[] } };
        assert.equal(state.engine.threads, Number(E2E_ENGINE_THREADS));
        const pairs = state.engine.perThread.map((t) => t.pairs);
        assert.equal(pairs.reduce((a, b) => a + b, 0), 16, `pairs per thread: ${JSON.stringify(pairs)}`);
        // Sixteen clients from sixteen source ports all hashed to one copy of the public port
        // has a chance of 4^-15 with four threads.
        assert.ok(pairs.filter((n) => n > 0).length >= 2, `pairs per thread: ${JSON.stringify(pairs)}`);
      } finally {
        await Promise.all(clients.map((c) => closedBy(c.end() as net.Socket)));
      }
    });
  }

  it('carries 100 MB through one client with matching SHA-256 both ways', async () => {
    const total = 100 * 1024 * 1024;
    const r = await bulkEcho(d.publicPort, total);
    assert.equal(r.bytes, total);
    assert.equal(r.received, r.sent);
  });

  it('serves 200 concurrent clients, each receiving exactly its own bytes', async () => {
    const payloads = Array.from({ length: 200 }, (_, i) => Buffer.concat([Buffer.from(`#${i}#`), randomBytes(2048 + i)]));
    const replies = await Promise.all(payloads.map((p) => roundTrip(d.publicPort, p)));
    replies.forEach((r, i) => assert.equal(sha256(r), sha256(payloads[i]!), `client ${i} got foreign or missing bytes`));
  });

  it('propagates half-close: a client that shuts its write side still gets the whole answer', async () => {
    // A service that reads until EOF, then answers with a digest of everything it read.
    const digestService = await startService((socket) => {
      const h = createHash('sha256');
      socket.on('data', (c: Buffer) => h.update(c));
      socket.on('end', () => socket.end(h.digest('hex')));
    });
    const dir2 = await tempDir();
    // One engine thread, from the files: one thread stays covered end to end.
    const d2 = await writeDeployment(dir2.path, { targetPort: digestService.port, pool: 2, threads: 1 });
    const w2 = runRelay(['white', '--config', d2.whitePath], { ...env, RELAY_ENGINE_THREADS: '' });
    const g2 = runRelay(['gray', '--config', d2.grayPath], { ...env, RELAY_ENGINE_THREADS: '' });
    try {
      await w2.waitForMsg('listening');
      await g2.waitForMsg('pool ready');
      if (plane === 'splice') for (const p of [w2, g2]) assert.equal((await p.waitForMsg('data plane')).threads, 1);
      const payload = randomBytes(3 * 1024 * 1024);
      const answer = await roundTrip(d2.publicPort, payload);
      assert.equal(answer.toString(), sha256(payload));
    } finally {
      await g2.kill();
      await w2.kill();
      digestService.server.close();
      await dir2.cleanup();
    }
  });

  it('gives a stranger on the data port nothing while clients keep working', async () => {
    const stranger = net.connect({ host: '127.0.0.1', port: d.dataPort });
    stranger.on('connect', () => stranger.write(randomBytes(200)));
    const seen = await closedBy(stranger);
    assert.equal(seen.length, 0);
    await white.waitFor((l) => l.msg === 'connection refused' && l.code === 'RELAY_ERR_PREAMBLE_INVALID', 'the refusal log line');
    assert.equal((await roundTrip(d.publicPort, Buffer.from('ok'))).toString(), 'ok');
  });
});

describe('e2e: authentication failures', () => {
  it('rejects a wrong secret and an unknown id the same way, and the gray keeps retrying', async () => {
    const dir = await tempDir();
    const service = await startService();
    const wrong = await writeDeployment(dir.path, { targetPort: service.port, graySecret: randomBytes(32).toString('base64url') });
    const white = runRelay(['white', '--config', wrong.whitePath]);
    try {
      await white.waitForMsg('listening');
      const gray = runRelay(['gray', '--config', wrong.grayPath]);
      const ended = await gray.waitFor((l) => l.msg === 'control session ended', 'auth failure');
      assert.equal(ended.code, 'RELAY_ERR_WHITE_PROOF_INVALID');
      await gray.waitFor((l) => l.msg === 'reconnecting' && Number(l.attempt) >= 2, 'a second attempt');
      await gray.kill();
      await white.waitFor((l) => l.msg === 'gray authentication failed', 'white-side auth failure log');

      // Unknown id with the right secret of another gray: same outcome.
      const { writeFile } = await import('node:fs/promises');
      const { readFile } = await import('node:fs/promises');
      const text = (await readFile(wrong.grayPath, 'utf8')).replace(/^id: .*$/m, 'id: nobody').replace(/^secret: .*$/m, `secret: "${wrong.secret}"`);
      await writeFile(wrong.grayPath, text);
      const unknown = runRelay(['gray', '--config', wrong.grayPath]);
      const ended2 = await unknown.waitFor((l) => l.msg === 'control session ended', 'auth failure');
      assert.equal(ended2.code, ended.code);
      await unknown.kill();
      // Nothing serves the public port: a client is closed at once, not left hanging.
      const client = net.connect({ host: '127.0.0.1', port: wrong.publicPort });
      assert.equal((await closedBy(client)).length, 0);
    } finally {
      await white.kill();
      service.server.close();
      await dir.cleanup();
    }
  });
});

describe('e2e: restarts', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let service: Awaited<ReturnType<typeof startService>>;
  let d: Deployment;

  before(async () => {
    dir = await tempDir();
    service = await startService();
    d = await writeDeployment(dir.path, { targetPort: service.port, pool: 4 });
  });
  after(async () => {
    service.server.close();
    await dir.cleanup();
  });

  it('gray killed mid-transfer: its client is closed promptly; a new gray serves again', async () => {
    const white = runRelay(['white', '--config', d.whitePath]);
    try {
      await white.waitForMsg('listening');
      const gray = runRelay(['gray', '--config', d.grayPath]);
      await gray.waitForMsg('pool ready');
      const client = net.connect({ host: '127.0.0.1', port: d.publicPort });
      client.on('connect', () => client.write(randomBytes(1024)));
      await new Promise((r) => client.once('data', r)); // the echo proves the pair is live
      const closed = closedBy(client);
      await gray.kill('SIGKILL');
      await closed;
      const again = runRelay(['gray', '--config', d.grayPath]);
      await again.waitForMsg('pool ready');
      assert.equal((await roundTrip(d.publicPort, Buffer.from('back'))).toString(), 'back');
      await again.kill();
    } finally {
      await white.kill();
    }
  });

  it('white killed: the gray reconnects with backoff to the new white (new certificate) and serves again', async () => {
    const white = runRelay(['white', '--config', d.whitePath]);
    await white.waitForMsg('listening');
    const gray = runRelay(['gray', '--config', d.grayPath]);
    try {
      const first = await gray.waitForMsg('gray connected');
      await white.kill('SIGKILL');
      await gray.waitFor((l) => l.msg === 'reconnecting', 'a reconnect attempt');
      const white2 = runRelay(['white', '--config', d.whitePath]);
      try {
        await white2.waitForMsg('listening');
        const second = await gray.waitFor((l) => l.msg === 'gray connected' && l !== first, 'the second session');
        assert.notEqual(second.fingerprint, first.fingerprint, 'a restarted white has a new certificate');
        await gray.waitFor((l) => l.msg === 'pool ready' && gray.lines.indexOf(l) > gray.lines.indexOf(second), 'the pool refilled');
        assert.equal((await roundTrip(d.publicPort, Buffer.from('after restart'))).toString(), 'after restart');
      } finally {
        await white2.kill();
      }
    } finally {
      await gray.kill();
    }
  });

  it('SIGTERM: the white stops accepting but lets an active client finish, then exits 0', async () => {
    // A service that answers slowly: the answer arrives after the white got SIGTERM.
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    let sawClient: () => void = () => {};
    const serviceSawClient = new Promise<void>((r) => (sawClient = r));
    const slow = await startService((socket) => {
      sawClient();
      socket.on('data', () => {});
      socket.on('end', () => void gate.then(() => socket.end('late answer')));
    });
    const dir2 = await tempDir();
    const d2 = await writeDeployment(dir2.path, { targetPort: slow.port, pool: 2 });
    const white = runRelay(['white', '--config', d2.whitePath]);
    const gray = runRelay(['gray', '--config', d2.grayPath]);
    try {
      await white.waitForMsg('listening');
      await gray.waitForMsg('pool ready');
      const answer = roundTrip(d2.publicPort, Buffer.from('question'));
      await serviceSawClient; // the pair exists end to end
      white.child.kill('SIGTERM');
      await white.waitForMsg('draining active clients');
      // New clients are refused now.
      await assert.rejects(roundTrip(d2.publicPort, Buffer.from('late client')));
      release();
      assert.equal((await answer).toString(), 'late answer');
      assert.equal((await white.exited).code, 0);
    } finally {
      await gray.kill();
      await white.kill();
      slow.server.close();
      await dir2.cleanup();
    }
  });
});
