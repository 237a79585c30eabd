// The gray's forwarder as the agent's drain sees it: a Forward must end exactly once, also when
// it is destroyed while the connection to the local service is still being made.
import assert from 'node:assert/strict';
import net, { type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { forwardToTarget } from '../../src/engine/gray/forwarder.js';
import type { PairEnd } from '../../src/engine/substrate/pair.js';
import { RateLimitedLog } from '../../src/rate-limited-log.js';
import { grayConfigFor, startService } from '../helpers/tunnel.js';
import { captureLogger } from '../soak/support.js';

const client = { family: 4 as const, srcAddress: '203.0.113.7', srcPort: 40000, dstAddress: '198.51.100.1', dstPort: 443 };

/** A connected socket pair on loopback: [our end, the end handed to the forwarder]. */
async function dataConnection(server: net.Server): Promise<[Socket, Socket]> {
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const dialed = net.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, allowHalfOpen: true });
  await new Promise<void>((resolve) => dialed.once('connect', resolve));
  return [dialed, await accepted];
}

describe('gray forwarder', () => {
  let white: net.Server;
  let service: Awaited<ReturnType<typeof startService>>;
  before(async () => {
    white = net.createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve) => white.listen(0, '127.0.0.1', resolve));
    service = await startService();
  });
  after(() => {
    white.close();
    service.server.close();
  });

  it('a forward destroyed while the service connection is pending ends once, with no pair', async () => {
    const [whiteEnd, data] = await dataConnection(white);
    const config = grayConfigFor('g', Buffer.alloc(32, 1), 1, service.port);
    const { logger } = captureLogger('silent');
    const results: Array<PairEnd | null> = [];
    const forward = forwardToTarget(data, client, Buffer.alloc(0), config.services[0]!, config, logger, new RateLimitedLog(logger), (r) => results.push(r));
    forward.destroy(); // net.connect has not completed yet: it is always asynchronous
    await forward.closed;
    assert.deepEqual(results, [null]);
    assert.equal(data.destroyed, true);
    forward.destroy();
    assert.equal(results.length, 1, 'a second destroy must not report again');
    whiteEnd.destroy();
  });

  it('a joined forward ends when both sides have closed, with the byte counts', async () => {
    const [whiteEnd, data] = await dataConnection(white);
    const config = grayConfigFor('g', Buffer.alloc(32, 1), 1, service.port);
    const { logger } = captureLogger('silent');
    const results: Array<PairEnd | null> = [];
    const forward = forwardToTarget(data, client, Buffer.from('hi'), config.services[0]!, config, logger, new RateLimitedLog(logger), (r) => results.push(r));
    const echoed: Buffer[] = [];
    whiteEnd.on('data', (c: Buffer) => echoed.push(c));
    const ended = new Promise<void>((resolve) => whiteEnd.once('end', resolve));
    whiteEnd.end(' there');
    await ended;
    await forward.closed;
    assert.equal(Buffer.concat(echoed).toString(), 'hi there');
    assert.equal(results.length, 1);
    assert.equal(results[0]?.error, null);
    whiteEnd.destroy();
  });
});
