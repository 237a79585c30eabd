// A gray's port that cannot be bound costs only that gray: the white starts (or reloads) anyway,
// the other grays are served, the failed gray's logins are refused with RELAY_ERR_PORTS_UNBOUND,
// the OS error shows in the snapshot and the metrics, and the ports are bound by themselves once
// the other program lets go of them, without an edit. js-plane.test.ts runs this file again
// on the JS plane.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, it } from 'node:test';
import { renderMetrics } from '../../src/admin/metrics.js';
import { ErrorCodes } from '../../src/errors.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { silentLogger } from '../../src/log.js';
import { rawLogin } from '../helpers/raw-gray.js';
import { testDataPlane } from '../helpers/data-plane.js';
import { whiteConfigFor } from '../helpers/tunnel.js';
import { grayEntryInCode } from '../../src/config/in-code.js';
import { waitUntil } from '../soak/support.js';

async function holdPort(): Promise<{ port: number; release: () => Promise<void> }> {
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
  return { port: (holder.address() as net.AddressInfo).port, release: () => new Promise<void>((r) => holder.close(() => r())) };
}

const A = randomBytes(32);
const B = randomBytes(32);

describe('ports that cannot be bound', () => {
  it('at start: only that gray is down, its login is refused with PORTS_UNBOUND, and it binds once the port is released', { timeout: 30_000 }, async () => {
    const held = await holdPort();
    const white = new WhiteServer(
      whiteConfigFor([
        { id: 'a', secret: A, publicPort: held.port, dataPort: 0 },
        { id: 'b', secret: B, publicPort: 0, dataPort: 0 },
      ]),
      { dataPlane: testDataPlane(), logger: silentLogger() },
    );
    await white.start(); // does not throw: one taken port is not the whole white's failure
    try {
      const a = (): ReturnType<WhiteServer['snapshot']>['grays'][number] => white.snapshot().grays.find((g) => g.id === 'a')!;
      assert.equal(a().portsBound, false);
      assert.match(a().listenError ?? '', /EADDRINUSE/);
      assert.equal(white.snapshot().grays.find((g) => g.id === 'b')!.portsBound, true);
      const b = await rawLogin(white.controlPort, 'b', B, 1);
      b.socket.destroy();

      await assert.rejects(rawLogin(white.controlPort, 'a', A, 1), (err: Error) => err.message.includes(ErrorCodes.PORTS_UNBOUND) && /EADDRINUSE/.test(err.message));
      const metrics = renderMetrics(white.snapshot(), undefined);
      assert.match(metrics, /^relay_gray_ports_bound\{gray="a"\} 0$/m);
      assert.match(metrics, /^relay_gray_ports_bound\{gray="b"\} 1$/m);
      assert.match(metrics, /^relay_gray_bind_failures_total\{gray="a"\} [1-9]/m);

      await held.release();
      await waitUntil(() => a().portsBound, 'gray a to bind its ports after the release', 10_000);
      assert.equal(a().listenError, null);
      assert.equal(white.portsOf('a')!.publicPort, held.port);
      const s = await rawLogin(white.controlPort, 'a', A, 1);
      s.socket.destroy();
      assert.match(renderMetrics(white.snapshot(), undefined), /^relay_gray_ports_bound\{gray="a"\} 1$/m);
    } finally {
      await white.stop(0);
    }
  });

  it('by reload: the gray added on a taken port is reported as not applied, the other one is live', { timeout: 30_000 }, async () => {
    const held = await holdPort();
    const config = whiteConfigFor([]);
    const white = new WhiteServer(config, { dataPlane: testDataPlane(), logger: silentLogger() });
    await white.start();
    try {
      const result = await white.applyConfig({
        ...config,
        grays: [
          grayEntryInCode({ id: 'a', secret: A, publicPort: 0, dataPort: held.port }),
          grayEntryInCode({ id: 'b', secret: B, publicPort: 0, dataPort: 0 }),
        ],
      });
      assert.deepEqual(result.added, ['a', 'b']);
      assert.equal(result.notApplied.length, 1);
      assert.match(result.notApplied[0]!, /^grays\[a\]: .*EADDRINUSE.*retrying$/);
      const b = await rawLogin(white.controlPort, 'b', B, 1);
      b.socket.destroy();
      await held.release();
      await waitUntil(() => white.snapshot().grays.find((g) => g.id === 'a')!.portsBound, 'gray a to bind after the release', 10_000);
      const a = await rawLogin(white.controlPort, 'a', A, 1);
      assert.equal(a.dataPort, held.port);
      a.socket.destroy();
    } finally {
      await white.stop(0);
    }
  });
});
