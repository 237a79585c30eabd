// Security properties of the white, exercised with real TLS and sockets on loopback: strangers,
// replays, credits, source address, ended sessions, wrong secrets, unknown ids, a man in the
// middle, session replacement, heartbeats and deadlines.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import { ErrorCodes } from '../../src/errors.js';
import { GrayAgent } from '../../src/engine/gray/agent.js';
import { encodePreface } from '../../src/engine/protocol/constants.js';
import { FrameDecoder } from '../../src/engine/protocol/frames.js';
import { decodeMessage, encodeMessage, MessageType, type Message } from '../../src/engine/protocol/messages.js';
import { START_HEADER_BYTES } from '../../src/engine/protocol/start-header.js';
import { createInMemoryIdentity } from '../../src/engine/tls-cert.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { silentLogger } from '../../src/log.js';
import { closedBy, grayConfigFor, roundTrip, startService, startTunnel, whiteConfigFor, type Tunnel } from '../helpers/tunnel.js';
import { oneThreadDataPlane, testDataPlane } from '../helpers/data-plane.js';
import { messageReader, rawLogin, rawTlsConnect, sendOnDataPort } from '../helpers/raw-gray.js';
import { firstBytes, waitUntil } from '../soak/support.js';


/** Bounded wait for a condition that has no event of its own (a counter in a snapshot). */
function nextMatching(received: Message[], socket: net.Socket, predicate: (m: Message) => boolean): Promise<Message> {
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      const m = received.find(predicate);
      if (m) resolve(m);
      return m !== undefined;
    };
    if (check()) return;
    const onData = (): void => void setImmediate(() => check() && socket.off('data', onData));
    socket.on('data', onData);
    socket.once('close', () => setImmediate(() => check() || reject(new Error('closed without the expected message'))));
  });
}

describe('data port', () => {
  let t: Tunnel;
  const secret = randomBytes(32);
  let white: WhiteServer;
  let servicePort: number;
  let controlPort: number;
  let closeService: () => void;

  before(async () => {
    const service = await startService();
    servicePort = service.port;
    closeService = () => service.server.close();
    white = new WhiteServer(
      whiteConfigFor([{ id: 'raw', secret, publicPort: 0, dataPort: 0 }], { preambleTimeoutMs: 300, authFailurePenaltyBaseMs: 1, authFailurePenaltyMaxMs: 2 }),
      { dataPlane: testDataPlane(), logger: silentLogger() },
    );
    await white.start();
    controlPort = white.controlPort;
    t = await startTunnel({ whiteLimits: { preambleTimeoutMs: 300 } });
  });
  after(async () => {
    await t.stop();
    await white.stop(100);
    closeService();
  });

  it('closes a stranger sending junk, counts it, and never pairs it with a client', async () => {
    const stranger = await sendOnDataPort(t.dataPort, randomBytes(60));
    const seen = await closedBy(stranger);
    assert.equal(seen.length, 0, 'a stranger must receive nothing');
    await waitUntil(() => (t.white.snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_INVALID] ?? 0) === 1, 'PREAMBLE_INVALID to be counted');
    assert.equal((await roundTrip(t.publicPort, Buffer.from('still fine'))).toString(), 'still fine');
  });

  it('closes a silent stranger at the preamble deadline', async () => {
    const silent = await sendOnDataPort(t.dataPort, Buffer.alloc(0));
    await closedBy(silent);
    await waitUntil(() => (t.white.snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_TIMEOUT] ?? 0) === 1, 'PREAMBLE_TIMEOUT to be counted');
  });

  it('accepts a valid preamble once and refuses its replay', async () => {
    const s = await rawLogin(controlPort, 'raw', secret, 1);
    const publicPort = white.portsOf('raw')!.publicPort;
    const first = await sendOnDataPort(s.dataPort, s.preamble(1));
    // Proof of acceptance: a client arriving now is paired with exactly this connection.
    const client = net.connect({ host: '127.0.0.1', port: publicPort });
    client.on('error', () => {});
    const header = await firstBytes(first, START_HEADER_BYTES);
    assert.equal(header.length, START_HEADER_BYTES);
    client.destroy();

    const replay = await sendOnDataPort(s.dataPort, s.preamble(1));
    await closedBy(replay);
    await waitUntil(() => (white.snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_REPLAY] ?? 0) === 1, 'PREAMBLE_REPLAY to be counted');
    s.socket.destroy();
  });

  it('refuses counters beyond the granted credits, tampered tags, and other source addresses', async () => {
    const s = await rawLogin(controlPort, 'raw', secret, 2);
    const beyond = await sendOnDataPort(s.dataPort, s.preamble(s.credits + 50));
    await closedBy(beyond);
    await waitUntil(() => (white.snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_NO_CREDIT] ?? 0) === 1, 'PREAMBLE_NO_CREDIT to be counted');

    const tampered = s.preamble(1);
    const last = tampered.length - 1;
    tampered.writeUInt8(tampered.readUInt8(last) ^ 0x01, last);
    await closedBy(await sendOnDataPort(s.dataPort, tampered));
    await waitUntil(() => (white.snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_INVALID] ?? 0) >= 1, 'PREAMBLE_INVALID to be counted');

    const fromElsewhere = await sendOnDataPort(s.dataPort, s.preamble(1), '127.0.0.2');
    await closedBy(fromElsewhere);
    await waitUntil(() => (white.snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_WRONG_SOURCE] ?? 0) === 1, 'PREAMBLE_WRONG_SOURCE to be counted');

    // Neither refusal burned counter 1: from the right address it is still accepted.
    const ok = await sendOnDataPort(s.dataPort, s.preamble(1));
    const client = net.connect({ host: '127.0.0.1', port: white.portsOf('raw')!.publicPort });
    client.on('error', () => {});
    assert.equal((await firstBytes(ok, START_HEADER_BYTES)).length, START_HEADER_BYTES);
    client.destroy();
    s.socket.destroy();
  });

  it('refuses a preamble of a session that has ended', async () => {
    const old = await rawLogin(controlPort, 'raw', secret, 2);
    const stale = old.preamble(2);
    const fresh = await rawLogin(controlPort, 'raw', secret, 2); // replaces `old`
    await closedBy(old.socket);
    await closedBy(await sendOnDataPort(fresh.dataPort, stale));
    await waitUntil(() => (white.snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_UNKNOWN_SESSION] ?? 0) === 1, 'PREAMBLE_UNKNOWN_SESSION to be counted');
    fresh.socket.destroy();
  });

  it('a consumed connection is worth exactly one replacement credit, without a GRANT message', async (ctx) => {
    // One engine thread: with several, a client that lands on another thread than the idle
    // connection waits in JavaScript's books until that connection is moved to it, and a
    // waiting client (rightly) raises a GRANT, which is not what this test is about.
    const white = new WhiteServer(whiteConfigFor([{ id: 'raw', secret, publicPort: 0, dataPort: 0 }]), { dataPlane: oneThreadDataPlane(), logger: silentLogger() });
    await white.start();
    ctx.after(() => white.stop(100));
    const s = await rawLogin(white.controlPort, 'raw', secret, 1);
    assert.equal(s.credits, 1);
    const publicPort = white.portsOf('raw')!.publicPort;
    const idle = (): number => white.snapshot().grays.find((g) => g.id === 'raw')!.poolIdle;
    // Each connection is verified and idle before its client arrives: a client that had to wait
    // would (rightly) make the white send an explicit GRANT, which is not what this test is about.
    const conn = await sendOnDataPort(s.dataPort, s.preamble(1));
    await waitUntil(() => idle() === 1, 'the first connection is idle');
    const client = net.connect({ host: '127.0.0.1', port: publicPort });
    client.on('error', () => {});
    await firstBytes(conn, START_HEADER_BYTES);
    // Counter 2 is the implicit replacement credit: accepted, and paired with the next client.
    const successor = await sendOnDataPort(s.dataPort, s.preamble(2));
    await waitUntil(() => idle() === 1, 'the successor is idle');
    const client2 = net.connect({ host: '127.0.0.1', port: publicPort });
    client2.on('error', () => {});
    assert.equal((await firstBytes(successor, START_HEADER_BYTES)).length, START_HEADER_BYTES);
    // ...and counter 4 is beyond what two pairings and one initial credit allow (1 + 2 = 3).
    const beyond = await sendOnDataPort(s.dataPort, s.preamble(4));
    await closedBy(beyond);
    await waitUntil(() => (white.snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_NO_CREDIT] ?? 0) >= 1, 'PREAMBLE_NO_CREDIT to be counted');
    assert.ok(!s.received.some((m) => m.type === MessageType.GRANT), 'no GRANT is needed to replace consumed connections');
    client.destroy();
    client2.destroy();
    s.socket.destroy();
  });
});

describe('control port authentication', () => {
  const secret = randomBytes(32);
  let white: WhiteServer;
  let servicePort: number;
  let closeService: () => void;

  before(async () => {
    const service = await startService();
    servicePort = service.port;
    closeService = () => service.server.close();
    white = new WhiteServer(
      whiteConfigFor([{ id: 'known', secret, publicPort: 0, dataPort: 0 }], {
        authTimeoutMs: 300,
        heartbeatIntervalMs: 100,
        heartbeatMissed: 3,
        // Penalties are tested on their own; here they would refuse the next test's connection.
        authFailurePenaltyBaseMs: 0,
        authFailurePenaltyMaxMs: 0,
      }),
      { dataPlane: testDataPlane(), logger: silentLogger() },
    );
    await white.start();
  });
  after(async () => {
    await white.stop(100);
    closeService();
  });

  async function grayOutcome(id: string, graySecret: Buffer, port = white.controlPort): Promise<string> {
    const gray = new GrayAgent(grayConfigFor(id, graySecret, port, servicePort), silentLogger(), { dataPlane: testDataPlane() });
    const reason = new Promise<string>((resolve) => {
      gray.once('disconnected', (r) => resolve(r.code));
      gray.once('connected', () => resolve('connected'));
    });
    gray.start();
    const result = await reason;
    await gray.stop(10);
    return result;
  }

  it('a gray with the right secret connects', async () => {
    assert.equal(await grayOutcome('known', secret), 'connected');
  });

  it('a wrong secret and an unknown id look the same: the white proof does not verify', async () => {
    const before = white.snapshot().counters.authFailures;
    assert.equal(await grayOutcome('known', randomBytes(32)), ErrorCodes.WHITE_PROOF_INVALID);
    assert.equal(await grayOutcome('nobody', randomBytes(32)), ErrorCodes.WHITE_PROOF_INVALID);
    // Both are counted by the white as failed logins (the gray hung up after the white's proof).
    await new Promise<void>((resolve) => {
      const check = (): void => (white.snapshot().counters.authFailures >= before + 2 ? resolve() : void setTimeout(check, 10));
      check();
    });
  });

  it('answers a forged gray proof with the same BYE for a known and an unknown id', async () => {
    async function forged(id: string): Promise<Message | null> {
      const socket = await rawTlsConnect(white.controlPort);
      const reader = messageReader(socket);
      socket.write(encodePreface());
      socket.write(encodeMessage({ type: MessageType.HELLO, id, pool: 1, reuse: 0, agent: 'forger' }));
      const proof = await reader.next();
      assert.equal(proof?.type, MessageType.WHITE_PROOF);
      socket.write(encodeMessage({ type: MessageType.GRAY_PROOF, proof: randomBytes(32).toString('base64url') }));
      return reader.next();
    }
    const a = await forged('known');
    const b = await forged('nobody');
    assert.deepEqual(a, b);
    assert.equal(a?.type === MessageType.BYE && a.code, ErrorCodes.AUTH_FAILED);
  });

  it('a TLS-terminating man in the middle fails on both sides and never sees the gray proof', async () => {
    const identity = await createInMemoryIdentity('mitm');
    const fromGray: Buffer[] = [];
    const mitm = tls.createServer({ key: identity.keyPem, cert: identity.certPem, minVersion: 'TLSv1.3' }, (graySide) => {
      const whiteSide = tls.connect({ host: '127.0.0.1', port: white.controlPort, rejectUnauthorized: false });
      graySide.on('data', (c: Buffer) => fromGray.push(c));
      graySide.pipe(whiteSide).pipe(graySide);
      graySide.on('error', () => whiteSide.destroy());
      whiteSide.on('error', () => graySide.destroy());
      graySide.on('close', () => whiteSide.destroy());
      whiteSide.on('close', () => graySide.destroy());
    });
    await new Promise<void>((resolve) => mitm.listen(0, '127.0.0.1', resolve));
    const port = (mitm.address() as net.AddressInfo).port;
    try {
      assert.equal(await grayOutcome('known', secret, port), ErrorCodes.WHITE_PROOF_INVALID);
      const decoder = new FrameDecoder({ maxPayloadBytes: 1024, expectPreface: true });
      const types = decoder.push(Buffer.concat(fromGray)).map((f) => decodeMessage(f).type);
      assert.ok(types.includes(MessageType.HELLO));
      assert.ok(!types.includes(MessageType.GRAY_PROOF), 'the gray must not send its proof through a man in the middle');
    } finally {
      mitm.close();
    }
  });

  it('a second login replaces the first only after it has authenticated', async () => {
    const first = await rawLogin(white.controlPort, 'known', secret, 1);
    await assert.rejects(rawLogin(white.controlPort, 'known', randomBytes(32), 1), /white proof invalid/);
    assert.equal(first.socket.destroyed, false, 'a failed login must not disturb the live session');
    const second = await rawLogin(white.controlPort, 'known', secret, 1);
    const bye = await nextMatching(first.received, first.socket, (m) => m.type === MessageType.BYE);
    assert.equal(bye.type === MessageType.BYE && bye.code, ErrorCodes.SESSION_REPLACED);
    second.socket.destroy();
  });

  it('closes a session whose peer stops answering heartbeats', async () => {
    // The raw session never answers PING: the white must give up after heartbeatMissed intervals.
    const s = await rawLogin(white.controlPort, 'known', secret, 1);
    const bye = await nextMatching(s.received, s.socket, (m) => m.type === MessageType.BYE);
    assert.equal(bye.type === MessageType.BYE && bye.code, ErrorCodes.HEARTBEAT_TIMEOUT);
  });

  it('closes a TLS connection that does not authenticate within the deadline', async () => {
    const socket = await rawTlsConnect(white.controlPort);
    const reader = messageReader(socket);
    socket.write(encodePreface());
    const bye = await reader.next();
    assert.equal(bye?.type === MessageType.BYE && bye.code, ErrorCodes.AUTH_TIMEOUT);
  });

  it('refuses TLS 1.2', async () => {
    await assert.rejects(
      new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: white.controlPort, rejectUnauthorized: false, maxVersion: 'TLSv1.2' }, () => resolve(s));
        s.once('error', reject);
      }),
    );
    assert.ok((white.snapshot().counters.controlRejections.tls_error ?? 0) >= 1);
  });
});
