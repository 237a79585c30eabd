// Several services per gray on real sockets, on this process's data plane (the suite runs again
// with RELAY_DATA_PLANE=js): a service on one side only is refused or warned about as
// docs/errors.md says; allow-lists refuse at accept, IPv4, IPv6 and IPv4-mapped; another
// protocol version is refused naming both versions. (Many clients on two services: services-load.test.ts.)
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { PROTOCOL_VERSION } from '../../src/engine/protocol/constants.js';
import { MessageType } from '../../src/engine/protocol/messages.js';
import { ErrorCodes } from '../../src/errors.js';
import { randomBytes } from 'node:crypto';
import { encodeMessage } from '../../src/engine/protocol/messages.js';
import { decodeStartHeader, START_HEADER_BYTES } from '../../src/engine/protocol/start-header.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { silentLogger } from '../../src/log.js';
import { testDataPlane } from '../helpers/data-plane.js';
import { rawLogin, rawTlsConnect, messageReader, sendOnDataPort } from '../helpers/raw-gray.js';
import { cidrs, publicOf, service, servicesOf, setupServices } from '../helpers/services.js';
import { closedBy, echoHandler, roundTrip, startService, whiteConfigFor } from '../helpers/tunnel.js';
import { firstBytes, tcpConnect, waitUntil, within } from '../soak/support.js';

describe('several services per gray', () => {
  it('a service the gray lacks: its clients are closed at once and counted; both sides say which; a service only the gray has is warned about', async () => {
    const echo = await startService(echoHandler);
    const s = await setupServices([publicOf('echo'), publicOf('ssh')], [service('echo', echo.port), service('extra', echo.port)]);
    try {
      await s.grayLog.waitFor((l) => l.code === ErrorCodes.SERVICE_NOT_ON_GRAY && l.service === 'ssh', 'the gray warning about ssh');
      await s.grayLog.waitFor((l) => l.code === ErrorCodes.SERVICE_NOT_ON_WHITE && l.service === 'extra', 'the gray warning about extra');
      await s.whiteLog.waitFor((l) => l.code === ErrorCodes.SERVICE_NOT_ON_GRAY && l.service === 'ssh', 'the white warning about ssh');
      await s.whiteLog.waitFor((l) => l.code === ErrorCodes.SERVICE_NOT_ON_WHITE && l.service === 'extra', 'the white warning about extra');
      const forwardsBefore = s.gray.counts().forwardsTotal;
      const c = await tcpConnect(s.port('ssh'));
      assert.equal((await closedEmpty(c)), true, 'closed at once, without a byte');
      const ssh = servicesOf(s).find((x) => x.name === 'ssh')!;
      assert.equal(ssh.clientsRefused[ErrorCodes.SERVICE_NOT_ON_GRAY], 1);
      await s.whiteLog.waitFor((l) => l.msg === 'connection refused' && l.code === ErrorCodes.SERVICE_NOT_ON_GRAY && l.service === 'ssh', 'the refusal logged with its service');
      assert.equal((await roundTrip(s.port('echo'), Buffer.from('still here'))).toString(), 'still here');
      await waitUntil(() => s.gray.counts().forwardsTotal === forwardsBefore + 1, 'the echo client, and only it, to have been forwarded by the gray');
      assert.equal(s.gray.counts().forwardsTotal, forwardsBefore + 1);
    } finally {
      await s.stop();
      echo.server.close();
    }
  });
});

describe("the gray's table", () => {
  it("a client that arrives before the gray's SERVICES waits (an idle connection on hand), then is paired with its service's index from that table", async () => {
    const secret = randomBytes(32);
    const services = [{ name: 'a', publicPort: 0, allow: [] }, { name: 'b', publicPort: 0, allow: [] }];
    const white = new WhiteServer(whiteConfigFor([{ id: 'raw', secret, dataPort: 0, services }]), { dataPlane: testDataPlane(), logger: silentLogger() });
    await white.start();
    const sockets: net.Socket[] = [];
    try {
      const s = await rawLogin(white.controlPort, 'raw', secret, 1, null);
      sockets.push(s.socket);
      const data = await sendOnDataPort(s.dataPort, s.preamble(1));
      sockets.push(data);
      const got: Buffer[] = [];
      data.on('data', (b: Buffer) => got.push(b));
      await waitUntil(() => white.snapshot().grays[0]!.poolIdle === 1, 'the data connection to be idle');
      const client = net.connect({ host: '127.0.0.1', port: white.portsOf('raw')!.publicPorts['b']! });
      sockets.push(client);
      client.write('hi');
      await waitUntil(() => white.snapshot().grays[0]!.pendingClients === 1, 'the client to wait');
      assert.equal(Buffer.concat(got).length, 0, 'nothing reached the gray before its table');
      // b is the gray's index 2 (a table the white could not have guessed).
      s.socket.write(encodeMessage({ type: MessageType.SERVICES, services: 'x,a,b' }));
      await waitUntil(() => Buffer.concat(got).length >= START_HEADER_BYTES + 2, 'the start header and the client bytes');
      const bytes = Buffer.concat(got);
      assert.equal(decodeStartHeader(bytes.subarray(0, START_HEADER_BYTES)).service, 2);
      assert.equal(bytes.subarray(START_HEADER_BYTES).toString(), 'hi');
    } finally {
      for (const socket of sockets) socket.destroy();
      await white.stop(100);
    }
  });
});

/** A white with one gray, 'raw', whose control session and data connections the test makes by
 *  hand; every socket the test pushes to sockets is closed after it, whatever it throws. */
async function withRawWhite(test: (w: { white: WhiteServer; secret: Buffer; sockets: net.Socket[]; gray: () => GrayView }) => Promise<void>): Promise<void> {
  const secret = randomBytes(32);
  const white = new WhiteServer(whiteConfigFor([{ id: 'raw', secret, publicPort: 0, dataPort: 0 }]), { dataPlane: testDataPlane(), logger: silentLogger() });
  await white.start();
  const sockets: net.Socket[] = [];
  try {
    await test({ white, secret, sockets, gray: () => white.snapshot().grays[0]! });
  } finally {
    for (const socket of sockets) socket.destroy();
    await white.stop(100);
  }
}

type GrayView = ReturnType<WhiteServer['snapshot']>['grays'][number];

describe('the idle pool above its target', () => {
  it('connections kept for clients that then left are closed once no client waits, down to the pool target', async () => {
    await withRawWhite(async ({ white, secret, sockets, gray }) => {
      // Pool target 1 (its one credit in flight), and no table yet: two clients wait in
      // JavaScript, one more than the credit in flight will reach, so the white grants one more,
      // and both connections are kept for them (clients wait) though neither can be served.
      const s = await rawLogin(white.controlPort, 'raw', secret, 1, null);
      sockets.push(s.socket);
      const clients = [await tcpConnect(white.portsOf('raw')!.publicPort), await tcpConnect(white.portsOf('raw')!.publicPort)];
      for (const c of clients) c.on('error', () => {});
      await waitUntil(() => gray().pendingClients === 2, 'both clients to wait');
      await waitUntil(() => s.received.some((m) => m.type === MessageType.GRANT), 'the credit the second waiting client raises');
      const data = [await sendOnDataPort(s.dataPort, s.preamble(1)), await sendOnDataPort(s.dataPort, s.preamble(2))];
      sockets.push(...data);
      const closed = data.map((d) => closedBy(d).then(() => d));
      await waitUntil(() => gray().poolIdle === 2, 'both connections idle');
      // One client leaves: another still waits, so both connections stay.
      clients[0]!.resetAndDestroy();
      await waitUntil(() => gray().pendingClients === 1, 'one client to be left waiting');
      assert.equal(gray().poolIdle, 2, 'kept while a client waits');
      // The other leaves: one connection is more than the pool wants, and the white closes it.
      clients[1]!.resetAndDestroy();
      const gone = await within(Promise.race(closed), 3000, 'the surplus connection to be closed');
      await waitUntil(() => gray().poolIdle === 1 && gray().pendingClients === 0, 'the pool back at its target');
      assert.equal(gone.readyState, 'closed');
      assert.equal(data.filter((d) => d.readyState !== 'closed').length, 1, 'the other stays in the pool');
    });
  });

  it('a client that a connection in flight will reach raises no GRANT: it is paired with that connection, and the pool is not overfilled', async () => {
    await withRawWhite(async ({ white, secret, sockets, gray }) => {
      // Pool target 1 and its one credit in flight (this raw gray dials only when told here).
      const s = await rawLogin(white.controlPort, 'raw', secret, 1);
      sockets.push(s.socket);
      assert.equal(s.credits, 1);
      const client = await tcpConnect(white.portsOf('raw')!.publicPort);
      sockets.push(client);
      client.write('hi');
      await waitUntil(() => gray().pendingClients === 1, 'the client to wait');
      // The connection of the credit in flight arrives and serves the client.
      const data = await sendOnDataPort(s.dataPort, s.preamble(1));
      sockets.push(data);
      assert.equal((await firstBytes(data, START_HEADER_BYTES + 2)).subarray(START_HEADER_BYTES).toString(), 'hi');
      // A round trip on the control channel after the wait began: a GRANT sent for the wait
      // would have come before the answer.
      s.socket.write(encodeMessage({ type: MessageType.PING, t: 1 }));
      await waitUntil(() => s.received.some((m) => m.type === MessageType.PONG), 'the PONG', 3000);
      assert.deepEqual(s.received.filter((m) => m.type === MessageType.GRANT), [], 'no GRANT: the credit in flight reached the client');
    });
  });
});

describe('allow-lists', () => {
  it('a client from 127.0.0.2 is refused and one from 127.0.0.1 served on the same port; the refused one never reaches the gray and costs no pooled connection', async () => {
    const echo = await startService(echoHandler);
    const s = await setupServices([publicOf('ssh', cidrs('127.0.0.1/32'))], [service('ssh', echo.port)]);
    try {
      await waitUntil(() => s.white.snapshot().grays[0]!.poolIdle === 4, 'the pool to be full');
      const refused = await tcpConnect(s.port('ssh'), '127.0.0.2');
      assert.equal(await closedEmpty(refused), true, 'closed at accept');
      await waitUntil(() => (servicesOf(s)[0]!.clientsRefused[ErrorCodes.CLIENT_NOT_ALLOWED] ?? 0) === 1, 'the refusal to be counted for ssh');
      assert.equal(s.white.snapshot().grays[0]!.clientsRefused[ErrorCodes.CLIENT_NOT_ALLOWED], 1);
      assert.equal(s.gray.counts().forwardsTotal, 0, 'the gray saw nothing');
      assert.equal(s.white.snapshot().grays[0]!.poolIdle, 4, 'no pooled connection spent');
      await s.whiteLog.waitFor((l) => l.code === ErrorCodes.CLIENT_NOT_ALLOWED && l.service === 'ssh' && l.remote !== undefined, 'the refusal logged');
      const served = await roundTrip(s.port('ssh'), Buffer.from('hello'));
      assert.equal(served.toString(), 'hello');
      await waitUntil(() => s.gray.counts().forwardsTotal === 1, 'the allowed client to have been forwarded');
    } finally {
      await s.stop();
      echo.server.close();
    }
  });

  it('IPv6: ::1 is served against a list that has it and refused against one that has not; an IPv4 client of a dual-stack port is matched as IPv4', async (t) => {
    if (!(await ipv6Loopback())) return t.skip('no IPv6 loopback on this machine');
    const echo = await startService(echoHandler);
    const s = await setupServices([publicOf('v6', cidrs('::1/128')), publicOf('other', cidrs('2001:db8::/32')), publicOf('mapped', cidrs('127.0.0.1/32'))], [service('v6', echo.port), service('other', echo.port), service('mapped', echo.port)], { bind: '::' });
    try {
      assert.equal((await roundTrip(s.port('v6'), Buffer.from('six'), '::1')).toString(), 'six');
      const refused = await tcpConnect(s.port('other'), undefined, '::1');
      assert.equal(await closedEmpty(refused), true);
      // On a "::" listener an IPv4 client is ::ffff:127.0.0.x: matched as the IPv4 address.
      assert.equal((await roundTrip(s.port('mapped'), Buffer.from('four'), '127.0.0.1')).toString(), 'four');
      const mappedRefused = await tcpConnect(s.port('mapped'), '127.0.0.2');
      assert.equal(await closedEmpty(mappedRefused), true);
      await waitUntil(() => servicesOf(s).every((x) => (x.clientsRefused[ErrorCodes.CLIENT_NOT_ALLOWED] ?? 0) === (x.name === 'v6' ? 0 : 1)), 'a refusal counted for other and mapped');
      await waitUntil(() => s.gray.counts().forwardsTotal === 2, 'the two allowed clients, and only they, to have been forwarded');
    } finally {
      await s.stop();
      echo.server.close();
    }
  });
});

describe('protocol version', () => {
  it('a peer of another version is refused with an error naming both versions', async () => {
    const s = await setupServices([publicOf('echo')], [service('echo', 1)]);
    try {
      const socket = await rawTlsConnect(s.white.controlPort);
      const reader = messageReader(socket);
      socket.write(Buffer.from([0x52, 0x4c, 0x59, 0x43, PROTOCOL_VERSION - 1, 0, 0, 0]));
      const bye = await reader.next();
      assert.ok(bye && bye.type === MessageType.BYE, `expected BYE, got ${JSON.stringify(bye)}`);
      assert.equal(bye.code, ErrorCodes.UNSUPPORTED_VERSION);
      assert.match(bye.reason, new RegExp(`version ${PROTOCOL_VERSION - 1} is not supported, this side speaks version ${PROTOCOL_VERSION}`));
      socket.destroy();
    } finally {
      await s.stop();
    }
  });
});

function ipv6Loopback(): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(0, '::1', () => server.close(() => resolve(true)));
  });
}

/** True once a client is closed having received nothing (tcpConnect may hand over one that a
 *  reset already closed). */
function closedEmpty(socket: net.Socket): Promise<boolean> {
  let got = 0;
  socket.on('data', (b: Buffer) => (got += b.length));
  socket.on('error', () => {});
  if (socket.destroyed) return Promise.resolve(got === 0);
  return new Promise((resolve) => socket.once('close', () => resolve(got === 0)));
}
