// One gray with two services (an echo service and one that answers with the digest of what it
// got), on this process's data plane: 100 concurrent clients on each port each get exactly their
// own service's bytes, over one control session and one pool; a dead target leaves the other
// serving.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { digestHandler, publicOf, service, servicesOf, setupServices, sha } from '../helpers/services.js';
import { closedBy, echoHandler, roundTrip, startService } from '../helpers/tunnel.js';
import { tcpConnect, waitUntil, within } from '../soak/support.js';
import { renderMetrics } from '../../src/admin/metrics.js';

describe('several services per gray under load', () => {
  it('100 concurrent clients on each of two ports each get their own service (SHA-256), over one session and one pool; a dead target leaves the other serving', async () => {
    const echo = await startService(echoHandler);
    const web = await startService(digestHandler);
    const s = await setupServices([publicOf('echo'), publicOf('web')], [service('echo', echo.port), service('web', web.port)]);
    try {
      assert.equal(s.white.snapshot().grays.length, 1);
      const one = async (name: 'echo' | 'web'): Promise<boolean> => {
        const payload = randomBytes(16 * 1024 + Math.floor(Math.random() * 4096));
        const got = await roundTrip(s.port(name), payload);
        return name === 'echo' ? sha(got) === sha(payload) : got.toString() === `B:${sha(payload)}`;
      };
      const results = await Promise.all(Array.from({ length: 200 }, (_, i) => one(i % 2 === 0 ? 'echo' : 'web')));
      assert.equal(results.filter((ok) => ok).length, 200, 'every client got exactly its own service');
      // A client sees its close before the white hears its pair's end (on any of the engine's
      // threads, and held up to 5 ms with other bookkeeping), so the last ends may come just after.
      const disconnected = () => s.events.filter((x) => x.name === 'client.disconnected');
      await waitUntil(() => disconnected().length === 200, 'every client.disconnected event', 5000);
      const counts = Object.fromEntries(servicesOf(s).map((x) => [x.name, x.clientsTotal]));
      assert.deepEqual(counts, { echo: 100, web: 100 });
      // The same per service in the metrics, with a service label.
      const metrics = renderMetrics(s.white.snapshot(), undefined);
      assert.match(metrics, /^relay_service_clients_total\{gray="nas",service="echo"\} 100$/m);
      assert.match(metrics, /^relay_service_clients_total\{gray="nas",service="web"\} 100$/m);
      // Each client's events name its service.
      const byService = new Map<string, number>();
      for (const e of disconnected()) byService.set(e.payload.service as string, (byService.get(e.payload.service as string) ?? 0) + 1);
      assert.deepEqual(Object.fromEntries(byService), { echo: 100, web: 100 });
      assert.equal(s.gray.counts().sessions, 1, 'one control session for both services');

      echo.server.close(); // stops listening at once; its connections are over
      const dead = await tcpConnect(s.port('echo'));
      const closed = closedBy(dead);
      dead.write('x');
      assert.equal((await within(closed, 10_000, 'the client of the dead service to be closed')).length, 0, 'the client of the dead service is closed without an answer');
      // The gray's engine closes the pair before its JavaScript counts the failure.
      await waitUntil(() => s.gray.counts().serviceConnectFailures === 1, 'the failed connect to be counted');
      assert.equal(await within(one('web'), 10_000, 'the other service to answer'), true, 'the other service still serves');
    } finally {
      // Bounded: a stop that hangs fails here, by name, rather than holding the whole run.
      await within(s.stop(), 15_000, 'the white and gray to stop');
      web.server.close();
    }
  });

});
