// The addon checks every argument on the JavaScript thread (native/napi.cc, Args) before an
// engine thread sees a command: a call that is wrong throws RELAY_ERR_DATA_PLANE naming what is
// wrong and changes nothing; the few calls that only name an id to close ignore a bad one.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Engine, type EngineHandle } from '../../src/engine/substrate/engine.js';
import { noEngine, testEngine } from '../helpers/data-plane.js';

const KEYS = Buffer.alloc(48, 7); // a session id (16 bytes) and a data key (32)

/** A method called with whatever the row gives, types unchecked: that is what is under test. */
type Loose = Record<string, (...args: unknown[]) => unknown>;

const refused: ReadonlyArray<readonly [string, unknown[], RegExp]> = [
  ['listen', ['127.0.0.1', 0, 16, 0, 1000, 0], /listen\(.*\): bad arguments/], // watchAny missing
  ['listen', ['127.0.0.1', 70_000, 16, 0, 1000, 0, false], /bad arguments/],
  ['listen', ['127.0.0.1', 0, 0, 0, 1000, 0, false], /bad arguments/], // backlog 0
  ['listen', ['127.0.0.1', 0, 16, 4097, 1000, 0, false], /bad arguments/],
  ['listen', ['localhost', 0, 16, 0, 1000, 0, false], /listen needs an IP address/],
  ['listen', ['127.0.0.1', 0, 16, 0, 1000, 0, false, 'magic'], /magic must be a Buffer/],
  ['listen', ['127.0.0.1', 0, 16, 0, 1000, 0, false, null, Buffer.alloc(17)], /allow must be a Buffer of 18-byte networks/],
  ['filter', [1, 3, null, 8], /filter\(.*\): bad arguments/],
  ['filter', [1, 2, 'not an ip', 8], /filter needs an IP address/],
  ['dial', ['127.0.0.1', 1, Buffer.alloc(60), 32], /dial bad arguments/], // keepAliveSec missing
  ['dial', ['127.0.0.1', 1, Buffer.alloc(0), 32, 0], /dial bad arguments/],
  ['dial', ['127.0.0.1', 0, Buffer.alloc(60), 32, 0], /dial bad arguments/],
  ['dial', ['localhost', 1, Buffer.alloc(60), 32, 0], /dial needs an IP address/],
  ['dial', ['127.0.0.1', 1, Buffer.alloc(60), 32, 0, 0], /dial routes must be a service table id above 0/],
  ['openStock', [Buffer.alloc(47), '127.0.0.1', 1, 32, 0], /openStock needs the session's keys/],
  ['openStock', [KEYS, '127.0.0.1', 1, 0, 0], /openStock bad arguments/],
  ['stock', [1, 0, 1, 1, 0], /stock\(.*\): bad arguments/], // counters start at 1
  ['stock', [1, 1, 1, 1, 2], /bad arguments/],
  ['stock', [1, 2 ** 53 - 1, 2, 1, 0], /bad arguments/], // past the safe integers
  ['join', [1], /join needs two held connections/],
  ['join', [1, 2, 'head'], /join: heads must be Buffers/],
  ['forward', [1, '127.0.0.1', 1, null], /forward\(.*\): bad arguments/],
  ['forward', [1, 'localhost', 1, null, 0], /forward needs an IP address/],
  ['usePool', [1, 2, 256], /usePool\(.*\): bad arguments/],
  ['admit', [], /admit\(clientId\): bad arguments/],
  ['activeLimit', [1], /activeLimit\(.*\): bad arguments/],
  ['session', [1, 1], /session\(.*\): bad arguments/],
  ['session', [1, 1, Buffer.alloc(10)], /bad arguments/],
  ['session', [1, 1, KEYS, -1], /session\(listenerId, epoch, keys, refillLevel\): bad arguments/],
  ['session', [1, 1, KEYS, 'half'], /bad arguments/],
  ['credits', [1, 1, -1], /credits\(.*\): bad arguments/],
  ['setAllow', [1], /setAllow\(.*\): bad arguments/],
  ['setRoutes', [0, []], /setRoutes\(table, routes\): bad arguments/],
  ['setRoutes', [1, [['127.0.0.1', 0, 0]]], /a route needs an IP address, a port and a keepalive/],
  ['idleTimeout', [1], /idleTimeout\(.*\): bad arguments/],
  ['poolPairs', ['one'], /poolPairs\(.*\): bad arguments/],
];

describe('the addon refuses bad arguments', { skip: noEngine() }, () => {
  const handle = (): Loose => testEngine()!.handle as unknown as Loose;

  for (const [method, args, message] of refused) {
    it(`${method}(${args.map((a) => (Buffer.isBuffer(a) ? `<${a.length} bytes>` : JSON.stringify(a))).join(', ')})`, () => {
      const before = testEngine()!.stats();
      assert.throws(
        () => handle()[method]!(...args),
        (err: Error & { code?: string }) => err.code === 'RELAY_ERR_DATA_PLANE' && message.test(err.message),
      );
      assert.deepEqual(testEngine()!.stats(), before, 'nothing changed');
    });
  }

  it('createEngine refuses a thread count or an event hold out of range, and starts nothing', () => {
    for (const threads of [0, 17]) assert.match(String(Engine.open(threads)), /createEngine: threads must be 1 to 16/, String(threads));
    for (const holdMs of [-1, 60_001]) assert.match(String(Engine.open(1, holdMs)), /createEngine: holdMs must be 0 to 60000/, String(holdMs));
  });

  it('the calls that only close by id ignore an id that is not a number, and those that report give null', () => {
    const h = testEngine()!.handle as EngineHandle;
    const loose = handle();
    for (const method of ['closeListener', 'closeConn', 'closeStock', 'destroy']) assert.equal(loose[method]!('x'), undefined, method);
    assert.equal(loose['bytes']!('x'), null);
    assert.equal(h.bytes(0xfffffff0), null, 'no such pair');
  });
});
