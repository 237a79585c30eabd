// End to end with real `relay white` and `relay gray` processes: an abort reaches the far end
// as an abort. A reset on one side, a drain deadline, or a white that cannot serve a client
// (gray offline, queue full, wait timed out, service refusing on the gray) must reach the other
// end as ECONNRESET, never as a clean end after a partial (or empty) transfer. Both data planes.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net, { type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ending, startService } from '../helpers/tunnel.js';
import { waitUntil } from '../soak/support.js';
import { freePort, runRelay, tempDir, writeDeployment, type Deployment, type RelayProcess } from './harness.js';

async function connect(port: number): Promise<Socket> {
  const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return socket;
}

/** Resolves once `socket` has received `n` bytes. */
function receivedAtLeast(socket: Socket, n: number): Promise<void> {
  let got = 0;
  return new Promise((resolve) => {
    const onData = (c: Buffer): void => {
      got += c.length;
      if (got < n) return;
      socket.off('data', onData);
      resolve();
    };
    socket.on('data', onData);
  });
}

/**
 * The service behind the gray. The first byte a client sends picks what it does:
 * 'D' downloads 1 MB and resets at the client's next byte; 'U' answers 'k' once 64 KiB of an
 * upload arrived; 'H' answers 'ok' and holds. For 'U' and 'H' the way the connection ended at
 * the service is handed to the next nextEnding() caller.
 */
async function abortService(): Promise<{ port: number; close(): void; nextEnding(): Promise<string> }> {
  const endings: Array<Promise<string>> = [];
  const waiters: Array<(p: Promise<string>) => void> = [];
  const hand = (p: Promise<string>): void => {
    const waiter = waiters.shift();
    if (waiter) waiter(p);
    else endings.push(p);
  };
  const { server, port } = await startService((socket) => {
    socket.on('error', () => {});
    socket.once('data', (first: Buffer) => {
      const mode = String.fromCharCode(first[0]!);
      if (mode === 'D') {
        socket.write(randomBytes(1024 * 1024));
        socket.once('data', () => socket.resetAndDestroy());
        return;
      }
      hand(ending(socket));
      if (mode === 'H') return void socket.write('ok');
      let got = first.length;
      const onData = (c: Buffer): void => {
        got += c.length;
        if (got < 64 * 1024) return;
        socket.off('data', onData);
        socket.write('k');
      };
      socket.on('data', onData);
    });
  });
  return {
    port,
    close: () => server.close(),
    nextEnding: () => (endings.length > 0 ? endings.shift()! : new Promise<Promise<string>>((resolve) => waiters.push(resolve)).then((p) => p)),
  };
}

// Both data planes, one after the other.
describe('e2e: an abort reaches the far end as an abort', () => {
  for (const plane of ['splice', 'js'] as const) describe(`${plane} data plane`, () => {
    const env = { RELAY_DATA_PLANE: plane };
    const running: RelayProcess[] = [];
    const dirs: Array<{ cleanup: () => Promise<void> }> = [];
    let service: Awaited<ReturnType<typeof abortService>>;

    /** A white and (unless withGray is false) its gray, both ready. */
    async function deploy(opts: { targetPort?: number; whiteExtra?: string; withGray?: boolean; pool?: number } = {}): Promise<{ d: Deployment; white: RelayProcess; gray: RelayProcess | null }> {
      const dir = await tempDir();
      dirs.push(dir);
      const d = await writeDeployment(dir.path, { targetPort: opts.targetPort ?? service.port, pool: opts.pool ?? 2, whiteExtra: opts.whiteExtra });
      const white = runRelay(['white', '--config', d.whitePath], env);
      running.push(white);
      await white.waitForMsg('listening');
      if (opts.withGray === false) return { d, white, gray: null };
      const gray = runRelay(['gray', '--config', d.grayPath], env);
      running.push(gray);
      await gray.waitForMsg('pool ready');
      return { d, white, gray };
    }

    let shared: Awaited<ReturnType<typeof deploy>>;
    before(async () => {
      service = await abortService();
      shared = await deploy();
    });
    after(async () => {
      for (const p of running) await p.kill();
      service?.close();
      for (const dir of dirs) await dir.cleanup();
    });

    it('a service that resets mid-download: the client sees ECONNRESET, not a clean end', async () => {
      const { d } = shared;
      const client = await connect(d.publicPort);
      const outcome = ending(client);
      const partly = receivedAtLeast(client, 64 * 1024);
      client.write('D');
      await partly;
      client.write('reset now');
      assert.equal(await outcome, 'reset');
    });

    it('a client that resets mid-upload: the service sees ECONNRESET, not a clean end', async () => {
      const { d } = shared;
      const client = await connect(d.publicPort);
      client.on('error', () => {});
      const atService = service.nextEnding();
      const heard = new Promise((resolve) => client.once('data', resolve));
      client.write('U');
      client.write(randomBytes(256 * 1024));
      await heard;
      client.resetAndDestroy();
      assert.equal(await atService, 'reset');
    });

    it('the service refuses the connection on the gray: the client is reset, and the gray says so', async () => {
      const { d, gray } = await deploy({ targetPort: await freePort() });
      // The reset may come before Node reports the connect: ending() hears it either way.
      const client = net.connect({ host: '127.0.0.1', port: d.publicPort, allowHalfOpen: true }, () => client.write('hello'));
      const outcome = ending(client);
      assert.equal(await outcome, 'reset');
      await gray!.waitFor((l) => l.msg === 'local service unreachable', 'the unreachable service logged');
    });

    it('the gray is offline: the client is reset, not answered with an empty end', async () => {
      const { d } = await deploy({ withGray: false });
      // The reset may come before Node reports the connect: ending() hears it either way.
      const client = net.connect({ host: '127.0.0.1', port: d.publicPort, allowHalfOpen: true });
      assert.equal(await ending(client), 'reset');
    });

    it('no data connection comes: a client past the queue limit and one past its wait are reset', async () => {
      const { d, white, gray } = await deploy({ whiteExtra: 'limits: { client_wait_ms: 500, pending_clients_per_gray: 1 }' });
      // A stopped gray dials no replacement: the idle pool is used up, then clients must wait.
      gray!.child.kill('SIGSTOP');
      try {
        // How many idle connections the white holds at this moment depends on what the gray had
        // dialed before it stopped, so six clients: the first ones are paired (and never end
        // while the gray is stopped), one waits until its timeout, the rest find the queue full.
        const clients: Socket[] = [];
        const settled: string[] = [];
        for (let i = 0; i < 6; i++) {
          const c = net.connect({ host: '127.0.0.1', port: d.publicPort, allowHalfOpen: true });
          void ending(c).then((how) => settled.push(how));
          clients.push(c);
          await new Promise((resolve) => c.once('connect', resolve).once('error', resolve));
        }
        await white.waitFor((l) => l.msg === 'connection refused' && l.code === 'RELAY_ERR_CLIENT_QUEUE_FULL', 'a queue-full refusal');
        // A data connection the gray dialed just before it stopped can still arrive and take the
        // waiting client; then the queue is empty again and the next client waits instead.
        const waitTimeout = (l: { msg?: unknown; code?: unknown }): boolean => l.msg === 'connection refused' && l.code === 'RELAY_ERR_CLIENT_WAIT_TIMEOUT';
        for (let extra = 0; !(await white.waitFor(waitTimeout, 'a wait-timeout refusal', 3000).then(() => true, () => false)); extra++) {
          assert.ok(extra < 4, `no client waited out client_wait_ms; last lines: ${white.tail()}`);
          const c = net.connect({ host: '127.0.0.1', port: d.publicPort, allowHalfOpen: true });
          void ending(c).then((how) => settled.push(how));
          clients.push(c);
        }
        await waitUntil(() => settled.length >= 2, 'the refused clients to see their end');
        assert.ok(
          settled.every((how) => how === 'reset'),
          `every refused client is reset: ${settled.join(', ')}`,
        );
        for (const c of clients) c.destroy();
      } finally {
        gray!.child.kill('SIGCONT');
      }
    });

    it('SIGTERM past the drain deadline: the active client and the service are both reset', async () => {
      const { d, white } = await deploy({ whiteExtra: 'limits: { drain_timeout_ms: 300 }' });
      const client = await connect(d.publicPort);
      const atService = service.nextEnding();
      const answered = new Promise((resolve) => client.once('data', resolve));
      client.write('H');
      await answered; // the pair is live end to end
      const outcome = ending(client);
      white.child.kill('SIGTERM');
      await white.waitForMsg('draining active clients');
      assert.equal(await outcome, 'reset');
      assert.equal(await atService, 'reset');
      assert.equal((await white.exited).code, 0);
    });
  });
});
