// The engine end to end inside one process: real TLS, real sockets on 127.0.0.1.
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { spliceAvailable } from '../../src/engine/data-plane/splice-plane.js';
import { defaultDialer } from '../../src/engine/gray/agent.js';
import { grayConfigFor, roundTrip, startTunnel, type Tunnel } from '../helpers/tunnel.js';

describe('tunnel (in-process)', () => {
  let t: Tunnel;
  before(async () => {
    t = await startTunnel({ pool: 4 });
  });
  after(async () => t.stop());

  it('echoes a small payload through white and gray', async () => {
    const reply = await roundTrip(t.publicPort, Buffer.from('hello relay'));
    assert.equal(reply.toString(), 'hello relay');
  });

  it('carries 8 MiB intact with half-close', async () => {
    const payload = randomBytes(8 * 1024 * 1024);
    const reply = await roundTrip(t.publicPort, payload);
    assert.equal(createHash('sha256').update(reply).digest('hex'), createHash('sha256').update(payload).digest('hex'));
  });

  it('serves more concurrent clients than the pool holds, each getting its own bytes', async () => {
    const payloads = Array.from({ length: 40 }, (_, i) => Buffer.from(`client-${i}-${randomBytes(8).toString('hex')}`));
    const replies = await Promise.all(payloads.map((p) => roundTrip(t.publicPort, p)));
    replies.forEach((r, i) => assert.equal(r.toString(), payloads[i]!.toString()));
    const snap = t.white.snapshot();
    assert.ok(snap.grays[0]!.clientsTotal >= 40);
  });
});

describe('gray dialers', () => {
  it('the engine dials for a service given as an IP address, Node sockets for a host name', () => {
    const config = grayConfigFor('g', randomBytes(32), 1, 2);
    assert.equal(defaultDialer(config), spliceAvailable() ? 'native' : 'node');
    assert.equal(defaultDialer({ ...config, target: { host: 'localhost', port: 2 } }), 'node');
    // A zone index: Node connects to it, the engine's inet_pton would refuse it.
    assert.equal(defaultDialer({ ...config, target: { host: 'fe80::1%lo', port: 2 } }), 'node');
    assert.equal(defaultDialer({ ...config, target: { host: '::1', port: 2 } }), spliceAvailable() ? 'native' : 'node');
  });

  for (const dialer of ['native', 'node'] as const) {
    it(`forwards with the ${dialer} dialer, the pool refilled after each client`, { skip: dialer === 'native' && !spliceAvailable() && 'native engine unavailable' }, async () => {
      const t = await startTunnel({ pool: 2, dialer });
      try {
        assert.equal(t.gray.dialerKind, dialer);
        // More clients than the pool, one after another: each needs the replacement of the last.
        for (let i = 0; i < 6; i++) {
          const payload = Buffer.from(`client ${i} ${randomBytes(4).toString('hex')}`);
          assert.equal((await roundTrip(t.publicPort, payload)).toString(), payload.toString());
        }
      } finally {
        await t.stop();
      }
    });
  }
});
