// The gray's file reloaded while it runs (GrayReloader, what `relay gray` runs on a change or
// SIGHUP): a service added to both files serves without a new session while a 100 MB transfer on
// another runs on intact; a removed service refuses its new clients and leaves its active one
// alone; an invalid edit leaves the running services; a new secret starts a new session.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GrayReloader } from '../../src/cli/gray-reloader.js';
import { loadGrayConfig } from '../../src/config/load.js';
import type { WhiteService } from '../../src/config/types.js';
import { WhiteSessions } from '../../src/engine/gray/white-sessions.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { ErrorCodes } from '../../src/errors.js';
import { testDataPlane } from '../helpers/data-plane.js';
import { digestHandler, publicOf } from '../helpers/services.js';
import { echoHandler, roundTrip, startService, whiteConfigFor } from '../helpers/tunnel.js';
import { captureLogger, tcpConnect, waitUntil } from '../soak/support.js';

const TRANSFER_BYTES = 100 * 1024 * 1024;

/** Streams n random bytes to port in 1 MiB chunks and resolves with their digest and the digest
 *  the service answered (digestHandler: "B:" and the SHA-256 of what it got). */
function transfer(port: number, n: number): { sent: Promise<string>; answered: Promise<string>; progressed: Promise<void> } {
  const hash = createHash('sha256');
  const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  let markProgress!: () => void;
  const progressed = new Promise<void>((resolve) => (markProgress = resolve));
  const sent = new Promise<string>((resolve, reject) => {
    socket.once('error', reject);
    socket.once('connect', () => {
      let left = n;
      const pump = (): void => {
        while (left > 0) {
          const chunk = randomBytes(Math.min(left, 1024 * 1024));
          left -= chunk.length;
          hash.update(chunk);
          if (left < n / 2) markProgress();
          if (!socket.write(chunk)) return void socket.once('drain', pump);
        }
        socket.end();
        resolve(hash.digest('hex'));
      };
      pump();
    });
  });
  const answered = new Promise<string>((resolve, reject) => {
    const got: Buffer[] = [];
    socket.on('data', (b: Buffer) => got.push(b));
    socket.once('end', () => resolve(Buffer.concat(got).toString()));
    socket.once('error', reject);
  });
  return { sent, answered, progressed };
}

describe('the gray reloads its file', () => {
  it('adds a service without a new session while a 100 MB transfer runs, removes one leaving its active client, keeps running on an invalid edit', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'relay-gray-reload-'));
    const secret = randomBytes(32);
    const bulk = await startService(digestHandler);
    const echo = await startService(echoHandler);
    const dataPlane = testDataPlane();
    const whiteLog = captureLogger('info');
    const grayLog = captureLogger('info');
    const bulkService: WhiteService = publicOf('bulk');
    const white = new WhiteServer(whiteConfigFor([{ id: 'nas', secret, dataPort: 0, services: [bulkService] }]), { dataPlane, logger: whiteLog.logger });
    await white.start();
    const file = join(dir, 'gray.yaml');
    const grayFile = (services: Record<string, number>, key = secret): string =>
      `white: "127.0.0.1:${white.controlPort}"\nid: nas\nsecret: "${key.toString('base64url')}"\npool: 4\nlimits: { reconnect_base_ms: 50, reconnect_max_ms: 500 }\nservices:\n${Object.entries(services)
        .map(([name, port]) => `  ${name}: { target: "127.0.0.1:${port}" }\n`)
        .join('')}`;
    await writeFile(file, grayFile({ bulk: bulk.port }), { mode: 0o600 });
    const sessions = new WhiteSessions(await loadGrayConfig(file), grayLog.logger, { dataPlane });
    const reloader = new GrayReloader(file, sessions, grayLog.logger);
    try {
      await sessions.start();
      await waitUntil(() => sessions.state()[0]?.connected === true && sessions.state()[0]!.poolIdle > 0, 'the gray to be connected with a pool');
      const sessionsBefore = sessions.status().whites[0]!.sessions;
      const big = transfer(white.portsOf('nas')!.publicPorts.bulk!, TRANSFER_BYTES);
      await big.progressed;

      // Both files get "web" while the transfer runs.
      await white.applyConfig(whiteConfigFor([{ id: 'nas', secret, dataPort: 0, services: [bulkService, publicOf('web')] }]));
      await writeFile(file, grayFile({ bulk: bulk.port, web: echo.port }));
      await reloader.run('test');
      await grayLog.waitFor((l) => l.msg === 'config reloaded' && l.applied === 'services', 'the gray to apply its services');
      await whiteLog.waitFor((l) => l.msg === 'gray services' && Array.isArray(l.services) && (l.services as string[]).includes('web'), 'the white to hear the gray has web');
      const webPort = white.portsOf('nas')!.publicPorts.web!;
      await waitUntil(() => white.snapshot().grays[0]!.services!.length === 2, 'the white to serve web');
      assert.equal((await roundTrip(webPort, Buffer.from('new service'))).toString(), 'new service');
      const [sent, answered] = await Promise.all([big.sent, big.answered]);
      assert.equal(answered, `B:${sent}`, 'the 100 MB transfer is intact');
      assert.equal(sessions.status().whites[0]!.sessions, sessionsBefore, 'no new session');

      // An invalid edit: logged, the running services stay.
      await writeFile(file, `${grayFile({ bulk: bulk.port, web: echo.port })}  Bad_Name: { target: "127.0.0.1:1" }\n`);
      await reloader.run('test');
      await grayLog.waitFor((l) => l.msg === 'config rejected; the running config stays', 'the invalid edit to be rejected');
      assert.equal((await roundTrip(webPort, Buffer.from('still'))).toString(), 'still');

      // "web" leaves the gray's file: an active client of it finishes, a new one is refused.
      const active = await tcpConnect(webPort);
      active.write('first half ');
      await waitUntil(() => white.snapshot().grays[0]!.services!.find((s) => s.name === 'web')!.activeClients === 1, 'the web client to be active');
      await writeFile(file, grayFile({ bulk: bulk.port }));
      await reloader.run('test');
      await whiteLog.waitFor((l) => l.code === ErrorCodes.SERVICE_NOT_ON_GRAY && l.service === 'web', 'the white to hear that the gray has no web');
      const refused = await tcpConnect(webPort);
      const refusedGot = await new Promise<number>((resolve) => {
        let n = 0;
        refused.on('data', (b: Buffer) => (n += b.length));
        refused.on('error', () => {});
        if (refused.destroyed) resolve(n);
        else refused.once('close', () => resolve(n));
      });
      assert.equal(refusedGot, 0, 'a new client of the removed service is refused');
      const echoed: Buffer[] = [];
      active.on('data', (b: Buffer) => echoed.push(b));
      const ended = new Promise<void>((resolve) => active.once('end', resolve));
      active.end('second half');
      await ended;
      assert.equal(Buffer.concat(echoed).toString(), 'first half second half', 'the active client was unharmed');
      assert.equal(sessions.status().whites[0]!.sessions, sessionsBefore, 'still no new session');

      // A new secret (in both files) starts a new session.
      const secret2 = randomBytes(32);
      await white.applyConfig(whiteConfigFor([{ id: 'nas', secret: secret2, dataPort: 0, services: [bulkService, publicOf('web')] }]));
      await writeFile(file, grayFile({ bulk: bulk.port }, secret2));
      await reloader.run('test');
      await grayLog.waitFor((l) => l.msg === 'config reloaded' && l.applied === 'reconnected', 'the gray to start its sessions again');
      await waitUntil(() => sessions.state()[0]?.connected === true, 'the gray to log in with the new secret', 10_000);
    } finally {
      await sessions.stop(100);
      await white.stop(100);
      bulk.server.close();
      echo.server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
