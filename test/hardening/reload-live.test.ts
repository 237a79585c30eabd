// A reload applies what it says to what is already running: the data port's source check, the
// limits of the pool broker and of the control port's admission, the control address and the
// bind address. Each test switches one setting on a running white (applyConfig, what every
// reload calls) and shows the new value at work on the next connection. js-plane.test.ts runs
// this file again on the JS plane.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, it } from 'node:test';
import type { WhiteConfig } from '../../src/config/types.js';
import { grayEntryInCode } from '../../src/config/in-code.js';
import { ErrorCodes } from '../../src/errors.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import type { Limits } from '../../src/limits.js';
import { silentLogger } from '../../src/log.js';
import { testDataPlane } from '../helpers/data-plane.js';
import { rawLogin, rawTlsConnect, sendOnDataPort } from '../helpers/raw-gray.js';
import { closedBy, roundTrip, startTunnel, whiteConfigFor } from '../helpers/tunnel.js';
import { waitUntil } from '../soak/support.js';

function connected(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Whether something listens on host:port: a connection, or a reset (the gray has no session,
 *  so a client is refused with a reset, perhaps before the connect is reported), not ECONNREFUSED. */
function listening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port }, () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNREFUSED' ? resolve(false) : err.code === 'ECONNRESET' ? resolve(true) : reject(err)));
  });
}

/** The same config with other top-level settings (what a reload of an edited file yields). */
function edited(config: WhiteConfig, change: Partial<WhiteConfig>, limits: Partial<Limits> = {}): WhiteConfig {
  return { ...config, ...change, limits: { ...config.limits, ...limits } };
}

const SECRET = randomBytes(32);

async function rawWhite(extra: Partial<WhiteConfig> = {}, limits: Partial<Limits> = {}): Promise<{ white: WhiteServer; config: WhiteConfig }> {
  const config = whiteConfigFor([{ id: 'raw', secret: SECRET, publicPort: 0, dataPort: 0 }], limits, { bind: '127.0.0.1', ...extra });
  const white = new WhiteServer(config, { dataPlane: testDataPlane(), logger: silentLogger() });
  await white.start();
  return { white, config };
}

describe('reload applies to what runs', () => {
  it('idle_timeout_ms switched on by reload reaches a pair already running; until then the snapshot shows it live (active, its bytes so far)', { timeout: 20_000 }, async () => {
    const tunnel = await startTunnel({ pool: 2 });
    try {
      const c = await connected(tunnel.publicPort);
      c.write('12345');
      await new Promise((r) => c.once('data', r));
      await waitUntil(() => tunnel.white.snapshot().grays[0]!.activeClients === 1, 'the pair counted');
      const live = tunnel.white.snapshot().grays[0]!;
      assert.deepEqual([live.bytesFromClients, live.bytesToClients, live.idleTimeouts], [5, 5, 0], 'the running pair\'s bytes, asked of the data plane');
      const ended = new Promise<string>((resolve) => {
        c.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
        c.once('close', () => resolve('close'));
      });
      const config = tunnel.white.currentConfig;
      const result = await tunnel.white.applyConfig({ ...config, grays: config.grays.map((g) => ({ ...g, idleTimeoutMs: 300 })) });
      assert.deepEqual(result.notApplied, []);
      assert.equal(await ended, 'ECONNRESET', 'the silent pair is reset');
      await waitUntil(() => tunnel.white.snapshot().grays[0]!.idleTimeouts === 1 && tunnel.white.snapshot().grays[0]!.activeClients === 0, 'the idle timeout counted, the pair ended');
      const after = tunnel.white.snapshot().grays[0]!;
      assert.deepEqual([after.activeClients, after.bytesFromClients, after.bytesToClients], [0, 5, 5], 'the ended pair\'s bytes, from its end');
    } finally {
      await tunnel.stop();
    }
  });

  it('data_source_check switched on by reload: a data connection from another address is refused from then on', async () => {
    const { white, config } = await rawWhite({ dataSourceCheck: false });
    const s = await rawLogin(white.controlPort, 'raw', SECRET, 4);
    const rejected = (): number => white.snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_WRONG_SOURCE] ?? 0;
    try {
      // Off: a valid preamble from 127.0.0.2 joins the pool.
      const before = await sendOnDataPort(s.dataPort, s.preamble(1), '127.0.0.2');
      before.on('error', () => {});
      await waitUntil(() => white.snapshot().grays[0]!.poolIdle === 1, 'the connection from 127.0.0.2 to be pooled');
      assert.equal(rejected(), 0);

      const result = await white.applyConfig(edited(config, { dataSourceCheck: true }));
      assert.deepEqual(result.notApplied, []);
      const after = await sendOnDataPort(s.dataPort, s.preamble(2), '127.0.0.2');
      await closedBy(after);
      await waitUntil(() => rejected() === 1, 'PREAMBLE_WRONG_SOURCE to be counted');
      assert.equal(white.snapshot().grays[0]!.poolIdle, 1, 'the refused one did not join the pool');
      before.destroy();
    } finally {
      s.socket.destroy();
      await white.stop(0);
    }
  });

  it('limits.active_clients_per_gray lowered to 2 by reload: the third client is refused', { timeout: 20_000 }, async () => {
    const tunnel = await startTunnel({ pool: 4 });
    try {
      const result = await tunnel.white.applyConfig(edited(tunnel.white.currentConfig, {}, { activeClientsPerGray: 2 }));
      assert.deepEqual(result.notApplied, []);
      const pair = async (): Promise<net.Socket> => {
        const c = await connected(tunnel.publicPort);
        c.write('x');
        await new Promise((r) => c.once('data', r));
        return c;
      };
      const a = await pair();
      const b = await pair();
      // Refused: reset (perhaps before the connect is even reported), never an answer.
      const third = net.connect({ host: '127.0.0.1', port: tunnel.publicPort });
      third.on('error', () => {});
      assert.equal((await closedBy(third)).length, 0);
      assert.equal(tunnel.white.snapshot().grays[0]!.clientsRefused[ErrorCodes.TOO_MANY_CLIENTS], 1);
      a.destroy();
      b.destroy();
      await waitUntil(() => tunnel.white.snapshot().grays[0]!.activeClients === 0, 'the pairs to end');
      assert.equal((await roundTrip(tunnel.publicPort, Buffer.from('room again'))).toString(), 'room again');
    } finally {
      await tunnel.stop();
    }
  });

  it('limits.unauthenticated_per_ip lowered to 2 by reload: the third unauthenticated control connection is refused before TLS', async () => {
    const { white, config } = await rawWhite();
    const open: net.Socket[] = [];
    try {
      await white.applyConfig(edited(config, {}, { unauthenticatedPerIp: 2 }));
      for (let i = 0; i < 2; i++) open.push(await connected(white.controlPort));
      const third = await connected(white.controlPort);
      third.on('error', () => {});
      assert.equal((await closedBy(third)).length, 0, 'closed without a byte (no TLS)');
      await waitUntil(() => (white.snapshot().counters.controlRejections.per_ip_limit ?? 0) === 1, 'per_ip_limit to be counted');
    } finally {
      for (const s of open) s.destroy();
      await white.stop(0);
    }
  });

  it('control.listen changed by reload: the control port moves, the authenticated session stays', async () => {
    const { white, config } = await rawWhite({ grays: [grayEntryInCode({ id: 'raw', secret: SECRET, publicPort: 0, dataPort: 0 }), grayEntryInCode({ id: 'raw2', secret: SECRET, publicPort: 0, dataPort: 0 })] });
    const s = await rawLogin(white.controlPort, 'raw', SECRET, 1);
    const oldPort = white.controlPort;
    try {
      const free = net.createServer();
      await new Promise<void>((r) => free.listen(0, '127.0.0.1', r));
      const newPort = (free.address() as net.AddressInfo).port;
      await new Promise<void>((r) => free.close(() => r()));
      const result = await white.applyConfig(edited(config, { control: { host: '127.0.0.1', port: newPort } }));
      assert.deepEqual(result.notApplied, []);
      assert.equal(white.controlPort, newPort);
      const moved = await rawLogin(newPort, 'raw2', SECRET, 1);
      await assert.rejects(rawTlsConnect(oldPort), (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED');
      const connectedIds = white.snapshot().grays.filter((g) => g.connected).map((g) => g.id);
      assert.deepEqual(connectedIds.sort(), ['raw', 'raw2'], 'the session made on the old listener was not cut');
      moved.socket.destroy();
    } finally {
      s.socket.destroy();
      await white.stop(0);
    }
  });

  it('control.listen moved to a taken port: not applied, said so, and the old port keeps listening', async () => {
    const { white, config } = await rawWhite();
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const taken = (holder.address() as net.AddressInfo).port;
    try {
      const result = await white.applyConfig(edited(config, { control: { host: '127.0.0.1', port: taken } }));
      assert.equal(result.notApplied.length, 1);
      assert.match(result.notApplied[0]!, /^control\.listen: .*EADDRINUSE.*stays on 127\.0\.0\.1:/);
      const s = await rawLogin(white.controlPort, 'raw', SECRET, 1);
      s.socket.destroy();
    } finally {
      holder.close();
      await white.stop(0);
    }
  });

  it('bind changed by reload: the gray\'s ports move to the new address', async () => {
    const { white, config } = await rawWhite();
    try {
      const before = white.portsOf('raw')!.publicPort;
      assert.equal(await listening('127.0.0.1', before), true);
      const result = await white.applyConfig(edited(config, { bind: '127.0.0.3' }));
      assert.deepEqual(result.notApplied, []);
      assert.deepEqual(result.changed, ['raw']);
      assert.equal(await listening('127.0.0.1', before), false);
      assert.equal(await listening('127.0.0.3', white.portsOf('raw')!.publicPort), true);
    } finally {
      await white.stop(0);
    }
  });

  it('admin, metrics and watch changed by reload: not applied, each named as needing a restart', async () => {
    const { white, config } = await rawWhite();
    try {
      const result = await white.applyConfig(
        edited(config, { metrics: { host: '127.0.0.1', port: 9999 }, admin: { socket: '/tmp/other.sock', tcp: null }, watch: { polling: true, debounceMs: 50 } }),
      );
      assert.equal(result.notApplied.length, 3);
      for (const key of ['admin', 'metrics.listen', 'watch']) {
        assert.ok(result.notApplied.some((l) => l.startsWith(`${key}: `) && l.includes('restart needed')), `${key} named`);
      }
    } finally {
      await white.stop(0);
    }
  });
});
