// Strangers and broken peers on the white's shared control port, before TLS, after TLS before
// authentication, and after authentication. Every case runs while a legitimate client streams
// through the tunnel (SHA-256 checked both ways), and checks that the white refuses the input,
// records it (counter and/or log line) and keeps serving.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type tls from 'node:tls';
import { ErrorCodes } from '../../src/errors.js';
import { GrayAgent } from '../../src/engine/gray/agent.js';
import { encodeMessage, MessageType } from '../../src/engine/protocol/messages.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { grayConfigFor, roundTrip, startService, whiteConfigFor } from '../helpers/tunnel.js';
import { testDataPlane } from '../helpers/data-plane.js';
import {
  captureClientHello,
  captureLogger,
  closeTime,
  ControlProbe,
  frameBytes,
  LiveTransfer,
  loginRaw,
  MiB,
  mib,
  retainedBytes,
  tcpConnect,
  tlsAttempt,
  waitUntil,
  within,
  type CapturedLogger,
} from '../soak/support.js';

const LEGIT = 'legit';
const RAW = 'raw';
const SECRET = randomBytes(32);
const RAW_SECRET = randomBytes(32);
const LIMITS = { handshakeTimeoutMs: 500, authTimeoutMs: 500, heartbeatIntervalMs: 300, heartbeatMissed: 3 };

let white: WhiteServer;
let log: CapturedLogger;
let gray: GrayAgent;
let publicPort: number;
let closeService: () => void;

/** Each case attacks from its own loopback address, so per-address caps and penalties of one
 *  case never touch another (nor the legitimate gray on 127.0.0.1). */
let nextHost = 10;
const freshIp = (): string => `127.0.1.${nextHost++}`;

const controlCount = (key: string): number => white.snapshot().counters.controlRejections[key] ?? 0;

/** Runs `attack` while a legitimate transfer is moving; asserts the transfer survives intact and
 *  the tunnel still takes new clients afterwards. */
async function underAttack(attack: () => Promise<void>): Promise<void> {
  const live = await LiveTransfer.start(publicPort);
  try {
    await live.progressed();
    await attack();
    await live.progressed();
  } finally {
    const result = await live.finish();
    assert.ok(result.intact, `the legitimate transfer was damaged: sent ${result.sentBytes} bytes, got back ${result.receivedBytes}`);
  }
  assert.equal((await roundTrip(publicPort, Buffer.from('still serving'))).toString(), 'still serving');
}

before(async () => {
  const service = await startService();
  closeService = () => service.server.close();
  log = captureLogger();
  white = new WhiteServer(
    whiteConfigFor(
      [
        { id: LEGIT, secret: SECRET, publicPort: 0, dataPort: 0 },
        { id: RAW, secret: RAW_SECRET, publicPort: 0, dataPort: 0 },
      ],
      LIMITS,
    ),
    { dataPlane: testDataPlane(), logger: log.logger },
  );
  await white.start();
  gray = new GrayAgent(grayConfigFor(LEGIT, SECRET, white.controlPort, service.port, { pool: 4 }), captureLogger().logger, { dataPlane: testDataPlane() });
  const ready = new Promise((r) => gray.once('pool-ready', r));
  gray.start();
  await within(ready, 10_000, 'the legitimate gray');
  publicPort = white.portsOf(LEGIT)!.publicPort;
});

after(async () => {
  await gray.stop(50);
  await white.stop(50);
  closeService();
});

describe('control port before TLS', () => {
  it('200 connections of random bytes: all closed, counted, memory bounded', async () => {
    await underAttack(async () => {
      const baseline = retainedBytes();
      const before = controlCount('tls_error') + controlCount('handshake_timeout');
      const ips = Array.from({ length: 20 }, freshIp);
      for (let round = 0; round < 10; round++) {
        const sockets = await Promise.all(ips.map((ip) => tcpConnect(white.controlPort, ip)));
        const closed = sockets.map((s) => closeTime(s));
        for (const s of sockets) s.write(randomBytes(4096));
        await Promise.all(closed);
      }
      // A random prefix can pass for a TLS record header that promises more; those wait for
      // the handshake deadline instead of failing at once. Either way each one is counted.
      await waitUntil(() => controlCount('tls_error') + controlCount('handshake_timeout') - before === 200, 'all 200 to be counted');
      const grown = retainedBytes() - baseline;
      assert.ok(grown < 16 * MiB, `retained memory grew by ${mib(grown)}`);
    });
  });

  it('an HTTP request: refused by TLS', async () => {
    await underAttack(async () => {
      const before = controlCount('tls_error');
      const s = await tcpConnect(white.controlPort, freshIp());
      s.write('GET / HTTP/1.1\r\nHost: relay\r\nConnection: keep-alive\r\n\r\n');
      await closeTime(s);
      assert.equal(controlCount('tls_error'), before + 1);
      await log.waitFor((l) => l.msg === 'TLS handshake failed', 'the TLS failure log line');
    });
  });

  it('a TLS 1.2-only client: refused', async () => {
    await underAttack(async () => {
      const before = controlCount('tls_error');
      assert.equal(await tlsAttempt(white.controlPort, freshIp(), { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' }), null);
      await waitUntil(() => controlCount('tls_error') === before + 1, 'the refusal to be counted');
    });
  });

  it('a ClientHello dribbled a byte at a time: cut at the handshake deadline', async () => {
    const hello = await captureClientHello();
    await underAttack(async () => {
      const before = controlCount('handshake_timeout');
      const s = await tcpConnect(white.controlPort, freshIp());
      const started = Date.now();
      let sent = 0;
      const dribble = setInterval(() => sent < hello.length && !s.destroyed && s.write(hello.subarray(sent, ++sent)), 50);
      const elapsed = await closeTime(s, started);
      clearInterval(dribble);
      assert.ok(elapsed >= LIMITS.handshakeTimeoutMs - 5 && sent < hello.length, `closed after ${elapsed} ms, ${sent} bytes`);
      assert.equal(controlCount('handshake_timeout'), before + 1);
    });
  });
});

interface FrameCase {
  readonly name: string;
  /** Bytes after TLS; the preface is sent first unless `raw` is set. */
  readonly bytes: () => Buffer;
  readonly raw?: boolean;
  /** Send HELLO first and wait for WHITE_PROOF (the case is about what follows). */
  readonly afterHello?: boolean;
  readonly bye: string;
  /** Which counter records it: a control rejection by code (default) or a failed login. */
  readonly counted?: 'authFailures';
  readonly slow?: boolean;
}

const hello = (id = LEGIT): Buffer => encodeMessage({ type: MessageType.HELLO, id, pool: 1, reuse: 0, agent: 'stranger' });
const json = (type: number, text: string): Buffer => frameBytes(type, text);

const FRAME_CASES: FrameCase[] = [
  { name: 'length 0', bytes: () => frameBytes(MessageType.HELLO, ''), bye: ErrorCodes.MESSAGE_INVALID },
  { name: 'length 1', bytes: () => frameBytes(MessageType.HELLO, '{'), bye: ErrorCodes.MESSAGE_INVALID },
  { name: 'length limit+1 (header only)', bytes: () => frameBytes(MessageType.HELLO, Buffer.alloc(0), 1025), bye: ErrorCodes.FRAME_TOO_LARGE },
  { name: 'length 0xFFFFFFFF', bytes: () => frameBytes(MessageType.HELLO, Buffer.alloc(0), 0xffff_ffff), bye: ErrorCodes.FRAME_TOO_LARGE },
  { name: 'a length promising more than arrives, then silence', bytes: () => frameBytes(MessageType.HELLO, '{"id":"le', 500), bye: ErrorCodes.AUTH_TIMEOUT, slow: true },
  { name: 'invalid JSON', bytes: () => json(MessageType.HELLO, '{"id": "legit", "pool": 1, "agent": '), bye: ErrorCodes.MESSAGE_INVALID },
  {
    name: 'invalid UTF-8',
    bytes: () => frameBytes(MessageType.HELLO, Buffer.concat([Buffer.from('{"id":"legit","pool":1,"agent":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')])),
    bye: ErrorCodes.MESSAGE_INVALID,
  },
  { name: 'deep nesting', bytes: () => json(MessageType.HELLO, `{"id":${'['.repeat(500)}${']'.repeat(500)},"pool":1}`), bye: ErrorCodes.MESSAGE_INVALID },
  { name: 'a __proto__ key', bytes: () => json(MessageType.HELLO, '{"__proto__":{"polluted":"yes"},"id":"legit","pool":1,"reuse":0,"agent":"x"}'), bye: ErrorCodes.MESSAGE_INVALID },
  { name: 'constructor.prototype', bytes: () => json(MessageType.HELLO, '{"constructor":{"prototype":{"polluted":"yes"}},"id":"legit","pool":1,"reuse":0,"agent":"x"}'), bye: ErrorCodes.MESSAGE_INVALID },
  { name: 'a duplicate key', bytes: () => json(MessageType.HELLO, '{"id":"legit","id":"raw","pool":1,"reuse":0,"agent":"x"}'), bye: ErrorCodes.MESSAGE_INVALID },
  { name: 'an unknown type (99)', bytes: () => json(99, '{}'), bye: ErrorCodes.MESSAGE_INVALID },
  { name: 'type 0', bytes: () => json(0, '{}'), bye: ErrorCodes.MESSAGE_INVALID },
  { name: 'non-zero flags', bytes: () => Buffer.concat([Buffer.from([0, 0, 0, 2, MessageType.HELLO, 0x80]), Buffer.from('{}')]), bye: ErrorCodes.FRAME_MALFORMED },
  { name: 'a wrong preface magic', raw: true, bytes: () => Buffer.from('RLYX\x01\0\0\0'), bye: ErrorCodes.BAD_MAGIC },
  { name: 'another protocol version', raw: true, bytes: () => Buffer.from('RLYC\x01\0\0\0'), bye: ErrorCodes.UNSUPPORTED_VERSION },
  { name: 'GRAY_PROOF before HELLO', bytes: () => encodeMessage({ type: MessageType.GRAY_PROOF, proof: randomBytes(32).toString('base64url') }), bye: ErrorCodes.MESSAGE_UNEXPECTED },
  { name: 'GRANT sent by a gray', bytes: () => encodeMessage({ type: MessageType.GRANT, upTo: 5 }), bye: ErrorCodes.MESSAGE_UNEXPECTED },
  {
    name: 'WELCOME sent by a gray',
    bytes: () => encodeMessage({ type: MessageType.WELCOME, session: randomBytes(16).toString('base64url'), dataPort: 1, pool: 1, heartbeatMs: 1000, credits: 1, services: 'default' }),
    bye: ErrorCodes.MESSAGE_UNEXPECTED,
  },
  { name: 'a second HELLO', afterHello: true, bytes: () => hello(), bye: ErrorCodes.MESSAGE_UNEXPECTED, counted: 'authFailures' },
  {
    name: 'a proof of the wrong length',
    afterHello: true,
    bytes: () => json(MessageType.GRAY_PROOF, JSON.stringify({ proof: randomBytes(31).toString('base64url') })),
    bye: ErrorCodes.MESSAGE_INVALID,
    counted: 'authFailures',
  },
];

describe('control frames after TLS, before authentication', () => {
  for (const c of FRAME_CASES) {
    it(`${c.name}: closed with ${c.bye}`, async () => {
      await underAttack(async () => {
        const counter = (): number => (c.counted === 'authFailures' ? white.snapshot().counters.authFailures : controlCount(c.bye));
        const before = counter();
        const probe = await ControlProbe.open(white.controlPort, freshIp());
        if (!c.raw) probe.preface();
        if (c.afterHello) {
          probe.send(hello());
          await probe.next((m) => m.type === MessageType.WHITE_PROOF);
        }
        const started = Date.now();
        probe.send(c.bytes());
        assert.equal(await probe.byeCode(3000), c.bye);
        const elapsed = probe.closedAt! - started;
        if (c.slow) assert.ok(elapsed >= LIMITS.authTimeoutMs - 5, `closed after ${elapsed} ms, at the auth deadline`);
        else assert.ok(elapsed < LIMITS.authTimeoutMs, `closed after ${elapsed} ms, at once`);
        assert.equal(probe.decodeError, null, 'the white only ever sends valid frames');
        await waitUntil(() => counter() === before + 1, `the ${c.counted ?? c.bye} counter to move`);
        assert.equal((Object.prototype as Record<string, unknown>).polluted, undefined, 'no prototype pollution');
      });
    });
  }

  it('a frame of exactly the limit is read (the HELLO padded to 1024 bytes gets a WHITE_PROOF)', async () => {
    await underAttack(async () => {
      const probe = await ControlProbe.open(white.controlPort, freshIp());
      probe.preface();
      probe.send(json(MessageType.HELLO, JSON.stringify({ id: LEGIT, pool: 1, reuse: 0, agent: 'padded' }).padEnd(1024, ' ')));
      await probe.next((m) => m.type === MessageType.WHITE_PROOF);
      probe.destroy();
    });
  });

  it('a BYE from a stranger: closed quietly (no BYE back); a BYE whose reason carries a line separator is invalid', async () => {
    await underAttack(async () => {
      const before = controlCount(ErrorCodes.INTERNAL);
      const quiet = await ControlProbe.open(white.controlPort, freshIp());
      quiet.preface();
      quiet.send(json(MessageType.BYE, JSON.stringify({ code: 'RELAY_ERR_NOT_A_CODE', reason: 'going' })));
      assert.equal(await quiet.byeCode(), null);
      // An unknown code is kept as RELAY_ERR_INTERNAL, never echoed into counters or logs as is.
      await waitUntil(() => controlCount(ErrorCodes.INTERNAL) === before + 1, 'the close to be counted');
      assert.equal(controlCount('RELAY_ERR_NOT_A_CODE'), 0);

      const forged = await ControlProbe.open(white.controlPort, freshIp());
      forged.preface();
      forged.send(json(MessageType.BYE, JSON.stringify({ code: 'RELAY_ERR_SHUTDOWN', reason: 'bye\u2028{"msg":"forged line"}' })));
      assert.equal(await forged.byeCode(), ErrorCodes.MESSAGE_INVALID);
    });
  });
});

describe('control frames after authentication', () => {
  const postAuth: Array<{ name: string; bytes: () => Buffer; bye: string }> = [
    { name: 'a PING nested 30,000 deep (64 KiB frame)', bytes: () => json(MessageType.PING, `{"t":${'['.repeat(30_000)}${']'.repeat(30_000)}}`), bye: ErrorCodes.MESSAGE_INVALID },
    { name: 'a GRANT from the gray', bytes: () => encodeMessage({ type: MessageType.GRANT, upTo: 1000 }), bye: ErrorCodes.MESSAGE_UNEXPECTED },
    { name: 'a second HELLO', bytes: () => hello(RAW), bye: ErrorCodes.MESSAGE_UNEXPECTED },
    { name: 'length 0xFFFFFFFF', bytes: () => frameBytes(MessageType.PING, Buffer.alloc(0), 0xffff_ffff), bye: ErrorCodes.FRAME_TOO_LARGE },
  ];
  for (const c of postAuth) {
    it(`${c.name}: the session ends with ${c.bye}, other grays are untouched`, async () => {
      await underAttack(async () => {
        const s = await loginRaw(white.controlPort, RAW, RAW_SECRET, 1, '127.0.0.50');
        s.probe.send(c.bytes());
        assert.equal(await s.probe.byeCode(), c.bye);
        await log.waitFor((l) => l.msg === 'gray disconnected' && l.gray === RAW && l.code === c.bye, `the disconnect log line (${c.bye})`);
      });
    });
  }

  it('a PING flood from a peer that never reads: replies are not queued without bound, and the peer is dropped', async () => {
    await underAttack(async () => {
      const s = await loginRaw(white.controlPort, RAW, RAW_SECRET, 1, '127.0.0.51');
      s.probe.socket.pause(); // never read a PONG
      const session = (): tls.TLSSocket | undefined =>
        (white as unknown as { sessions: Map<string, { channel: { socket: tls.TLSSocket } }> }).sessions.get(RAW)?.channel.socket;
      let maxQueued = 0;
      const sampler = setInterval(() => (maxQueued = Math.max(maxQueued, session()?.writableLength ?? 0)), 2);
      const batch = Buffer.concat(Array.from({ length: 4096 }, (_, i) => encodeMessage({ type: MessageType.PING, t: i })));
      const baseline = retainedBytes();
      // Our socket is paused, so we could not see the white hang up: its log says when it does.
      let isDropped = false;
      const dropped = log.waitFor((l) => l.msg === 'gray disconnected' && l.session === s.welcome.session, 'the flooding peer to be dropped', 30_000);
      void dropped.then(() => (isDropped = true), () => {});
      let sent = 0;
      try {
        while (sent < 8 * MiB && !isDropped) {
          maxQueued = Math.max(maxQueued, session()?.writableLength ?? 0);
          sent += batch.length;
          if (!s.probe.socket.write(batch)) await Promise.race([new Promise((r) => s.probe.socket.once('drain', r)), dropped, s.probe.closed]);
        }
      } finally {
        clearInterval(sampler);
      }
      assert.ok(maxQueued < MiB, `the white queued up to ${mib(maxQueued)} of replies (after ${mib(sent)} of PINGs) for a peer that does not read`);
      const line = await within(dropped, 10_000, 'the flooding peer to be dropped');
      assert.equal(line.code, ErrorCodes.HEARTBEAT_TIMEOUT, 'dropped by the heartbeat: it stopped being read');
      s.probe.destroy();
      const grown = retainedBytes() - baseline;
      assert.ok(grown < 32 * MiB, `retained memory grew by ${mib(grown)}`);
    });
  });
});
