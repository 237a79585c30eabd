// The reconnect storm in the suite, at 100 sessions; `npm run storm` runs it at 1,000 (it takes
// longer than the suite should). See storm.ts for what is measured.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runStorm } from './storm.js';

const SESSIONS = 100;
const RECONNECT_MAX_MS = 2000;
/** All back within this after the restarted white listens: a few backoff periods at the cap. */
const BOUND_MS = 30_000;
/** One: any two of the 100 sessions handshaking at the same moment cross it (at 4, a quiet machine
 *  served every reconnect before a fifth arrived, and the limit was never reached). */
const UNAUTHENTICATED_PER_IP = 1;

describe('reconnect storm', () => {
  it(`${SESSIONS} gray sessions reconnect to a restarted white at once: all back within ${BOUND_MS} ms, admission limits hold, nothing crashes`, async (t) => {
    const f = await runStorm({ sessions: SESSIONS, reconnectBaseMs: 100, reconnectMaxMs: RECONNECT_MAX_MS, boundMs: BOUND_MS, unauthenticatedPerIp: UNAUTHENTICATED_PER_IP, log: (l) => t.diagnostic(l) });
    t.diagnostic(`storm figures: ${JSON.stringify(f)}`);
    assert.equal(f.whiteAlive, true, 'the white survived the storm');
    assert.ok(f.allBackMs <= BOUND_MS, `all ${SESSIONS} back ${f.allBackMs} ms after the white listened`);
    // Every session comes from 127.0.0.1: more at once than unauthenticated_per_ip are refused
    // before any TLS work, and come back on their own backoff. (Memory per session is reported,
    // not asserted: at 100 sessions it is within the noise of the white's RSS; npm run storm
    // measures it at 1,000.)
    assert.ok((f.controlRefusals.per_ip_limit ?? 0) > 0, `refusals: ${JSON.stringify(f.controlRefusals)}`);
    assert.ok(f.peakFds <= f.fdBound, `peak descriptors ${f.peakFds} over ${f.fdBound}`);
  });
});
