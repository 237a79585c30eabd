// The engine end to end inside one process: real TLS, real sockets on 127.0.0.1.
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { jsDataPlane, type DataPlane } from '../../src/engine/substrate/data-plane.js';
import { engineDataPlane, noEngine, testEngine } from '../helpers/data-plane.js';
import { roundTrip, startTunnel, type Tunnel } from '../helpers/tunnel.js';
import { waitUntil } from '../soak/support.js';
import { parseV1, parseV2 } from './protocol/helpers.js';

/**
 * A service behind `proxy_protocol`: reads its connection to the client's end, splits off the
 * PROXY header and answers with the header's addresses and the rest, hex.
 */
function proxyEcho(version: 'v1' | 'v2') {
  return (socket: net.Socket): void => {
    const chunks: Buffer[] = [];
    socket.on('error', () => socket.destroy());
    socket.on('data', (b: Buffer) => chunks.push(b));
    socket.on('end', () => {
      const all = Buffer.concat(chunks);
      const headerBytes = version === 'v1' ? all.indexOf('\r\n') + 2 : 16 + all.readUInt16BE(14);
      const header = (version === 'v1' ? parseV1 : parseV2)(all.subarray(0, headerBytes));
      socket.end(JSON.stringify({ header, body: all.subarray(headerBytes).toString('hex') }));
    });
  };
}

/** A client bound to `localAddress`: sends `payload`, half-closes, returns its port and the answer. */
function clientFrom(localAddress: string, port: number, payload: Buffer): Promise<{ localPort: number; answer: string }> {
  return new Promise((resolve, reject) => {
    let answer = '';
    const socket = net.connect({ host: '127.0.0.1', port, localAddress, allowHalfOpen: true }, () => socket.end(payload));
    socket.setEncoding('utf8').on('data', (text: string) => (answer += text));
    socket.on('error', reject);
    socket.on('end', () => resolve({ localPort: socket.localPort!, answer }));
  });
}

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

describe('both data planes in one process', () => {
  const planes: Array<[string, () => DataPlane]> = [
    ['engine', engineDataPlane],
    ['js', () => jsDataPlane('test')],
  ];
  for (const [name, plane] of planes) {
    it(`forwards on the ${name} plane, the pool refilled after each client`, { skip: name === 'engine' && noEngine() }, async () => {
      const t = await startTunnel({ pool: 2, dataPlane: plane() });
      try {
        assert.equal(t.white.dataPlane.name, name === 'engine' ? 'splice' : 'js');
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

  it('with an engine, host names (bind, data host, target) are resolved for it, and every data connection is the engine\'s', { skip: noEngine() }, async () => {
    const engine = testEngine()!;
    const t = await startTunnel({ pool: 2, dataPlane: engineDataPlane(), white: { bind: 'localhost' }, gray: { dataHost: 'localhost' }, targetHost: 'localhost' });
    try {
      // Two idle connections held by the white's engine, two dialed ones held by the gray's (one
      // engine here): none of them a Node socket.
      await waitUntil(() => t.white.snapshot().grays[0]!.poolIdle === 2, 'the white to hold the pool');
      assert.ok(engine.stats().conns >= 4, `engine holds ${engine.stats().conns} connections`);
      const payload = randomBytes(64 * 1024);
      assert.ok((await roundTrip(t.publicPort, payload)).equals(payload));
    } finally {
      await t.stop();
    }
  });

  for (const [name, plane] of planes) {
    for (const version of ['v1', 'v2'] as const) {
      it(`a PROXY ${version} service on the ${name} plane gets each client's own header, one client after another${name === 'engine' ? ', on data connections carrying one client after another' : ''}`, { skip: name === 'engine' && noEngine() }, async () => {
        const t = await startTunnel({ pool: 2, dataPlane: plane(), gray: { proxyProtocol: version }, handler: proxyEcho(version) });
        try {
          const clients = 6;
          for (let i = 0; i < clients; i++) {
            const from = `127.0.0.${(i % 3) + 1}`;
            const payload = randomBytes(24 + i);
            const { localPort, answer } = await clientFrom(from, t.publicPort, payload);
            const got = JSON.parse(answer) as { header: { family: number; srcAddress: string; srcPort: number; dstAddress: string; dstPort: number }; body: string };
            assert.deepEqual(got.header, { family: 4, srcAddress: from, srcPort: localPort, dstAddress: '127.0.0.1', dstPort: t.publicPort }, `client ${i}`);
            assert.equal(got.body, payload.toString('hex'), `client ${i}'s bytes, after its header only`);
          }
          const gray = () => t.white.snapshot().grays[0]!;
          if (name === 'engine') {
            // The pool's two connections serve all six: each goes back to the pool after its client,
            // and a pool still half full is not refilled.
            await waitUntil(() => gray().dataConnectionsReused === clients, 'every data connection to come back');
          } else {
            assert.equal(gray().dataConnectionsReused, 0, 'the JS plane keeps one client per data connection');
          }
        } finally {
          await t.stop();
        }
      });
    }
  }
});
