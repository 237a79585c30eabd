// /readyz and /readyz/gray/<id> on the metrics listener, against a real white and gray: ready
// with an idle pooled connection, 503 with the reason otherwise, 404 for an id not configured.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { grayReadiness } from '../../src/admin/readiness.js';
import { AdminServer, type AdminState } from '../../src/admin/server.js';
import { silentLogger } from '../../src/log.js';
import { VERSION } from '../../src/version.js';
import { rawLogin } from '../helpers/raw-gray.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { startTunnel, whiteConfigFor, type Tunnel } from '../helpers/tunnel.js';
import { testDataPlane } from '../helpers/data-plane.js';

describe('readiness on the metrics listener', () => {
  let tunnel: Tunnel;
  let admin: AdminServer;
  before(async () => {
    tunnel = await startTunnel({ pool: 2 });
    const state = (): AdminState => ({ ...tunnel.white.snapshot(), version: VERSION });
    admin = new AdminServer(
      { socket: null, tcp: null, metrics: { host: '127.0.0.1', port: 0 }, logger: silentLogger() },
      { state, reload: async () => ({ ok: true, at: 0, error: null }), grayReadiness: (id) => tunnel.white.grayReadiness(id) },
    );
    await admin.start();
  });
  after(async () => {
    await admin?.close();
    await tunnel?.stop();
  });

  const get = async (path: string, method: 'GET' | 'HEAD' = 'GET') => {
    const res = await request(`http://127.0.0.1:${admin.addresses.metrics!.port}${path}`, { method });
    return { status: res.statusCode, type: res.headers['content-type'], text: await res.body.text() };
  };

  it('GET /readyz: 200 while the white runs', async () => {
    assert.deepEqual(await get('/readyz'), { status: 200, type: 'text/plain; charset=utf-8', text: 'white is up\n' });
  });

  it('GET /readyz/gray/<id>: 200 with a live session and idle pooled connections; HEAD too', async () => {
    const r = await get('/readyz/gray/g1');
    assert.equal(r.status, 200);
    assert.equal(r.text, 'gray "g1" is ready: 2 of 2 pooled connections idle\n');
    assert.equal((await get('/readyz/gray/g1', 'HEAD')).status, 200);
  });

  it('an id not in the config is 404; other paths are still not served', async () => {
    assert.deepEqual(await get('/readyz/gray/nope'), { status: 404, type: 'text/plain; charset=utf-8', text: 'gray "nope" is not in this white\'s config\n' });
    assert.equal((await get('/readyz/gray/%E0%A4%A')).status, 404);
    assert.equal((await get('/readyz/gray/')).status, 404);
    assert.equal((await get('/v1/state')).status, 404);
  });

  it('a session with no idle pooled connection is 503 with the reason', async () => {
    // Its own white, and a login that never opens a data connection: connected, nothing idle.
    const secret = randomBytes(32);
    const white = new WhiteServer(whiteConfigFor([{ id: 'g2', secret, publicPort: 0, dataPort: 0 }]), { dataPlane: testDataPlane(), logger: silentLogger() });
    await white.start();
    const own = new AdminServer(
      { socket: null, tcp: null, metrics: { host: '127.0.0.1', port: 0 }, logger: silentLogger() },
      { state: () => ({ ...white.snapshot(), version: VERSION }), reload: async () => ({ ok: true, at: 0, error: null }) },
    );
    await own.start();
    const raw = await rawLogin(white.controlPort, 'g2', secret, 2);
    try {
      // Without grayReadiness the route reads the state document: the same answer.
      const res = await request(`http://127.0.0.1:${own.addresses.metrics!.port}/readyz/gray/g2`);
      assert.equal(res.statusCode, 503);
      assert.equal(await res.body.text(), 'gray "g2" is connected but has no idle pooled connection (0 of 2)\n');
    } finally {
      raw.socket.destroy();
      await own.close();
      await white.stop(0);
    }
  });

  it('no live session is 503 with the reason, and ready again once the gray is back', async () => {
    const down = once(tunnel.gray, 'disconnected');
    await tunnel.gray.stop(0);
    await down;
    const r = await get('/readyz/gray/g1');
    assert.deepEqual(r, { status: 503, type: 'text/plain; charset=utf-8', text: 'gray "g1" has no live session on this white\n' });
  });
});

describe('grayReadiness', () => {
  it('says why, in one line', () => {
    assert.equal(grayReadiness('a', undefined).status, 404);
    assert.equal(grayReadiness('a', { connected: false, poolIdle: 3, poolTarget: 4 }).status, 503);
    assert.equal(grayReadiness('a', { connected: true, poolIdle: 0, poolTarget: 4 }).status, 503);
    assert.equal(grayReadiness('a', { connected: true, poolIdle: 1, poolTarget: 4 }).status, 200);
    for (const g of [undefined, { connected: true, poolIdle: 0, poolTarget: 4 }]) assert.ok(!grayReadiness('a', g).text.includes('\n'));
  });
});
