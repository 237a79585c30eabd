// `npm run storm [-- SESSIONS]`: the reconnect storm at 1,000 gray sessions (test/e2e/storm.ts),
// too slow for `npm test`, which runs it at 100. Prints the figures; exits 1 when a check fails.
import { runStorm } from '../test/e2e/storm.js';

const sessions = Number(process.argv[2] ?? 1000);
const boundMs = 60_000;
const f = await runStorm({ sessions, reconnectBaseMs: 100, reconnectMaxMs: 2000, boundMs, log: (l) => console.log(`  ${l}`) });
const mib = (b: number): string => `${(b / 1048576).toFixed(1)} MiB`;
console.log(`reconnect storm, ${f.sessions} sessions (one pooled connection each), all from 127.0.0.1:`);
console.log(`  first join: all pools ready in ${f.firstJoinMs} ms`);
console.log(`  after kill -9 and restart: half back ${f.halfBackMs} ms, all back ${f.allBackMs} ms after the white listened (bound ${boundMs} ms)`);
console.log(`  white RSS ${mib(f.whiteRssIdleBytes)} with no session, ${mib(f.whiteRssConnectedBytes)} with all: ${(f.rssPerSessionBytes / 1024).toFixed(1)} KiB per session`);
console.log(`  control connections refused by admission: ${JSON.stringify(f.controlRefusals)} (unauthenticated_per_ip ${f.unauthenticatedPerIp})`);
console.log(`  peak descriptors ${f.peakFds} (bound ${f.fdBound}); white alive: ${f.whiteAlive}`);
const failures: string[] = [];
if (!f.whiteAlive) failures.push('the white died');
if (f.allBackMs > boundMs) failures.push(`not all back within ${boundMs} ms`);
if (f.peakFds > f.fdBound) failures.push('descriptors over the bound');
if (failures.length > 0) {
  console.log(`FAILED: ${failures.join('; ')}`);
  process.exitCode = 1;
}
