// Every number that crosses the boundary between JavaScript and the engine is defined once in
// TypeScript (src/engine/substrate/codes.ts) and once in C++ (native/engine.h). This reads the
// header and fails when the two disagree: a name missing on either side, or a different value.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { EngineConstant, EventRecordFlag, EventType, FilterMode, GoneCode, PairEndFlag, RefusalCode, WatchCode } from '../../src/engine/substrate/codes.js';
import { STOCK_LEAD } from '../../src/engine/gray/pool-dialer.js';
import { START_HEADER_BYTES, START_HEADER_VERSION, START_HEADER_VERSION_FRAMED, START_HEADER_CREDIT } from '../../src/engine/protocol/start-header.js';

/** From dist/test/engine/ to the package root. */
const header = readFileSync(new URL('../../../native/engine.h', import.meta.url), 'utf8').replace(/\/\/[^\n]*/g, '');

/** The enumerators of `enum <name>` in engine.h, keyed as codes.ts keys them: without the `k`
 *  and the enum's own prefix, first letter lower-cased. */
function cppEnum(name: string, prefix = ''): Record<string, number> {
  const match = new RegExp(`enum\\s+${name}\\s*(?::\\s*\\w+)?\\s*\\{([^}]*)\\}`).exec(header);
  assert.ok(match, `enum ${name} not found in native/engine.h`);
  const out: Record<string, number> = {};
  for (const entry of match[1]!.split(',').map((e) => e.trim()).filter(Boolean)) {
    const m = /^k(\w+?)\s*=\s*(\d+)$/.exec(entry);
    assert.ok(m, `enum ${name}: "${entry}" has no explicit value (every code crossing to JavaScript needs one)`);
    assert.ok(m[1]!.startsWith(prefix), `enum ${name}: k${m[1]} does not start with k${prefix}`);
    const bare = m[1]!.slice(prefix.length);
    out[bare[0]!.toLowerCase() + bare.slice(1)] = Number(m[2]);
  }
  return out;
}

function cppConstant(name: string): number {
  const match = new RegExp(`constexpr\\s+\\w+\\s+${name}\\s*=\\s*(\\d+)\\s*;`).exec(header);
  assert.ok(match, `constexpr ${name} not found in native/engine.h`);
  return Number(match[1]);
}

describe('the codes JavaScript and the engine share', () => {
  const cases: Array<[string, Record<string, number>, Record<string, number>]> = [
    ['Event::Type', cppEnum('Type'), EventType],
    ['PairEndFlags', cppEnum('PairEndFlags'), PairEndFlag],
    ['Filter', cppEnum('Filter', 'Filter'), FilterMode],
    ['Watch', cppEnum('Watch', 'Watch'), WatchCode],
    ['Refusal', cppEnum('Refusal', 'Refused'), RefusalCode],
    ['GoneReason', cppEnum('GoneReason', 'Gone'), GoneCode],
    ['EventRecordFlags', cppEnum('EventRecordFlags', 'Record'), EventRecordFlag],
  ];
  for (const [name, cpp, ts] of cases) {
    it(`${name} is the same in native/engine.h and codes.ts`, () => {
      assert.deepEqual({ ...ts }, cpp);
    });
  }

  it('the engine reads the start header the protocol writes', () => {
    assert.equal(cppConstant('kStartHeaderBytes'), EngineConstant.startHeaderBytes);
    assert.equal(EngineConstant.startHeaderBytes, START_HEADER_BYTES);
    assert.equal(cppConstant('kStartHeaderVersion'), EngineConstant.startHeaderVersion);
    assert.equal(EngineConstant.startHeaderVersion, START_HEADER_VERSION);
    assert.equal(cppConstant('kStartHeaderVersionFramed'), EngineConstant.startHeaderVersionFramed);
    assert.equal(EngineConstant.startHeaderVersionFramed, START_HEADER_VERSION_FRAMED);
    assert.equal(cppConstant('kStartHeaderFlagsOffset'), EngineConstant.startHeaderFlagsOffset);
    assert.equal(cppConstant('kStartHeaderCredit'), EngineConstant.startHeaderCredit);
    assert.equal(EngineConstant.startHeaderCredit, START_HEADER_CREDIT);
    assert.equal(cppConstant('kFrameLengthBytes'), EngineConstant.frameLengthBytes);
  });

  it('the engine wakes JavaScript for its stock at the low-water mark JavaScript leads by twice', () => {
    assert.equal(cppConstant('kStockLowWater'), EngineConstant.stockLowWater);
    assert.equal(STOCK_LEAD, 2 * EngineConstant.stockLowWater);
  });

  it('an event record is as long on both sides, its inline bytes at the same place', () => {
    assert.equal(cppConstant('kEventRecordBytes'), EngineConstant.eventRecordBytes);
    assert.equal(cppConstant('kEventRecordInline'), EngineConstant.eventRecordInline);
    assert.equal(cppConstant('kEventRecordInlineBytes'), EngineConstant.eventRecordInlineBytes);
  });
});
