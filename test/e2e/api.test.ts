// The embedding API (src/api.ts) in this process: a white from an object, grays from an object
// and from a file, bytes through them both ways, their state, readiness, the listeners the OS
// chose ports for, stopping. The packed package is imported by name in test/package/.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startGray, startWhite, type RunningWhite } from '../../src/api.js';
import { generateSecret } from '../../src/config/secret.js';
import { ErrorCodes, isRelayError } from '../../src/errors.js';

const SECRET = generateSecret();

async function echoService(): Promise<{ server: net.Server; target: string }> {
  const server = net.createServer((socket) => socket.pipe(socket));
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  return { server, target: `127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** Sends payload, half-closes, and resolves with everything that came back. */
function roundTrip(port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((done, fail) => {
    const chunks: Buffer[] = [];
    const client = net.connect(port, '127.0.0.1', () => client.end(payload));
    client.on('data', (chunk: Buffer) => chunks.push(chunk));
    client.on('end', () => done(Buffer.concat(chunks)));
    client.on('error', fail);
  });
}

/** A fresh connection each time (no keep-alive pool), so a closed listener is seen as closed. */
function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((done, fail) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (t: string) => (body += t));
        res.on('end', () => done({ status: res.statusCode ?? 0, body }));
      })
      .on('error', fail);
  });
}

function postReload(socketPath: string): Promise<{ status: number; body: { ok: boolean; error: string | null } }> {
  return new Promise((done, fail) => {
    const req = http.request({ socketPath, method: 'POST', path: '/v1/reload' }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (t: string) => (text += t));
      res.on('end', () => done({ status: res.statusCode ?? 0, body: JSON.parse(text) as { ok: boolean; error: string | null } }));
    });
    req.on('error', fail);
    req.end();
  });
}

function grayRow(white: RunningWhite, id: string): ReturnType<RunningWhite['state']>['grays'][number] {
  const row = white.state().grays.find((g) => g.id === id);
  assert.ok(row, `gray ${id} in the white's state`);
  return row;
}

describe('embedding API', () => {
  it('a white from an object and grays from an object and a file carry bytes both ways, with port 0 everywhere', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'relay-api-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const { server: echo, target } = await echoService();
    t.after(() => echo.close());
    const white = await startWhite({
      control: { listen: '127.0.0.1:0' },
      bind: '127.0.0.1',
      admin: { socket: join(dir, 'admin.sock') },
      metrics: { listen: '127.0.0.1:0' },
      log: { level: 'silent' },
      grays: [
        { id: 'object', secret: SECRET, public_port: 0, data_port: 0 },
        { id: 'file', secret: SECRET, public_port: 0, data_port: 0 },
      ],
    });
    t.after(() => white.stop(0));
    const listening = white.listening;
    assert.equal(listening.control.port, white.controlPort);
    assert.ok(white.controlPort > 0 && listening.metrics !== null && listening.metrics.port > 0, JSON.stringify(listening));
    assert.equal(listening.adminSocket, join(dir, 'admin.sock'));
    assert.equal(listening.dashboard, null);

    const fromObject = await startGray({ white: `127.0.0.1:${white.controlPort}`, id: 'object', secret: SECRET, target, pool: 2, status: { listen: '127.0.0.1:0' }, log: { level: 'silent' } });
    t.after(() => fromObject.stop(0));
    const file = join(dir, 'gray.yaml');
    await writeFile(file, `white: "127.0.0.1:${white.controlPort}"\nid: file\nsecret: "${SECRET}"\ntarget: "${target}"\npool: 2\nlog: { level: silent }\n`, { mode: 0o600 });
    const fromFile = await startGray(file);
    t.after(() => fromFile.stop(0));
    assert.equal(fromFile.statusAddress, null);
    assert.ok(fromObject.statusAddress !== null && fromObject.statusAddress.port > 0);

    for (const [id, gray] of [['object', fromObject], ['file', fromFile]] as const) {
      await gray.ready();
      const state = gray.state();
      assert.equal(state.ready, true);
      assert.equal(state.id, id);
      assert.equal(state.whites.length, 1);
      assert.equal(state.whites[0]!.connected, true);
      assert.equal(state.whites[0]!.poolTarget, 2);
      const payload = randomBytes(64 * 1024);
      const back = await roundTrip(grayRow(white, id).publicPort, payload);
      assert.ok(back.equals(payload), `${id}: the echo came back whole`);
      assert.equal(grayRow(white, id).clientsTotal, 1);
      assert.equal(grayRow(white, id).connected, true);
    }
    // What the gray's status listener says agrees with ready().
    const readyz = await get(`http://127.0.0.1:${fromObject.statusAddress!.port}/readyz`);
    assert.equal(readyz.status, 200, readyz.body);
    const healthz = await get(`http://127.0.0.1:${listening.metrics!.port}/healthz`);
    assert.equal(healthz.status, 200, healthz.body);
    // There is no file behind this white: the admin API's reload says so.
    const reload = await postReload(join(dir, 'admin.sock'));
    assert.equal(reload.status, 422);
    assert.deepEqual([reload.body.ok, reload.body.error], [false, 'this white was started from a config object: there is no file to reload']);

    const stopping = fromObject.stop(0);
    assert.equal(fromObject.stop(0), stopping, 'a second stop returns the same promise');
    await stopping;
    await assert.rejects(fromObject.ready(), (err: unknown) => isRelayError(err, ErrorCodes.SHUTDOWN));
    await fromFile.stop(0);
    await white.stop(0);
    assert.equal(white.state().grays.length, 0, 'a stopped white has no gray endpoints');
    await assert.rejects(get(`http://127.0.0.1:${listening.metrics!.port}/healthz`), /ECONNREFUSED/);
  });

  it('ready() waits while the white is unreachable, and rejects when the gray is stopped first', async () => {
    // A port nothing listens on: taken from the OS, then given back.
    const probe = net.createServer();
    await new Promise<void>((listening) => probe.listen(0, '127.0.0.1', listening));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((closed) => probe.close(() => closed()));
    const gray = await startGray({ white: `127.0.0.1:${port}`, id: 'lonely', secret: SECRET, target: '127.0.0.1:9', log: { level: 'silent' } });
    const ready = gray.ready();
    const state = gray.state();
    assert.equal(state.ready, false);
    assert.equal(state.whites[0]!.connected, false);
    await gray.stop(0);
    await assert.rejects(ready, (err: unknown) => isRelayError(err, ErrorCodes.SHUTDOWN) && /stopped before it was ready/.test(err.message));
  });
});
