// Several engine threads (engine.threads, native/group.cc) with real sockets: a white and a gray
// on engines of four threads each (legal above this machine's core count, and it must be
// correct). Pairs land on more than one thread on both sides; a client meets a data connection
// verified on another thread; a preamble used on one thread's copy of the data port is refused
// on every other; a parked slow reader does not hold up a transfer on another thread; the ends,
// byte counts and the state's per-thread counts are those of one thread.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ErrorCodes, RelayError } from '../../src/errors.js';
import { GrayAgent } from '../../src/engine/gray/agent.js';
import type { DataPlane } from '../../src/engine/substrate/data-plane.js';
import { engineThreads, engineThreadsState } from '../../src/engine/substrate/data-plane.js';
import { Engine } from '../../src/engine/substrate/engine.js';
import { START_HEADER_BYTES } from '../../src/engine/protocol/start-header.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { silentLogger } from '../../src/log.js';
import { noEngine } from '../helpers/data-plane.js';
import { rawLogin, sendOnDataPort } from '../helpers/raw-gray.js';
import { closedBy, grayConfigFor, startService, whiteConfigFor } from '../helpers/tunnel.js';
import { firstBytes, waitUntil as waitFor, within } from '../soak/support.js';

const THREADS = 4;

function planeOf(threads: number): DataPlane {
  const engine = Engine.open(threads);
  if (typeof engine === 'string') throw new Error(engine);
  return { name: 'splice', engine, note: null };
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** soak/support's wait, with ten seconds by default: four engine threads per side share two cores. */
const waitUntil = (condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> => waitFor(condition, what, timeoutMs);

const threadsWithPairs = (plane: DataPlane): number[] =>
  engineThreadsState(plane)!.perThread.flatMap((t, i) => (t.pairs > 0 ? [i] : []));

describe('how many engine threads', () => {
  it('RELAY_ENGINE_THREADS wins over the file within 1 to 16, and anything else is a usage error naming the range', () => {
    const saved = process.env.RELAY_ENGINE_THREADS;
    try {
      process.env.RELAY_ENGINE_THREADS = '';
      assert.equal(engineThreads(3), 3);
      process.env.RELAY_ENGINE_THREADS = '16';
      assert.equal(engineThreads(3), 16);
      for (const bad of ['0', '17', '2.5', 'four']) {
        process.env.RELAY_ENGINE_THREADS = bad;
        assert.throws(
          () => engineThreads(3),
          (err: unknown) => err instanceof RelayError && err.code === ErrorCodes.USAGE && err.message === `RELAY_ENGINE_THREADS=${bad}: expected a whole number from 1 to 16`,
        );
      }
    } finally {
      if (saved === undefined) delete process.env.RELAY_ENGINE_THREADS;
      else process.env.RELAY_ENGINE_THREADS = saved;
    }
  });
});

describe('engine threads', { skip: noEngine() }, () => {
  const whitePlane = noEngine() ? null : planeOf(THREADS);
  const grayPlane = noEngine() ? null : planeOf(THREADS);
  let white: WhiteServer;
  let gray: GrayAgent;
  let publicPort: number;
  let serviceClose: () => void;
  /** The service: echoes, except for a connection whose first byte is 'S', which it floods. */
  const flooding: net.Socket[] = [];
  let floodBlocked: (() => void) | null = null;

  before(async () => {
    const service = await startService((socket) => {
      socket.once('data', (first: Buffer) => {
        if (first[0] === 'S'.charCodeAt(0)) {
          flooding.push(socket);
          const chunk = Buffer.alloc(256 * 1024, 7);
          const push = (): void => {
            // Until the kernel's buffers and the pair's are full: the slow reader never reads.
            while (socket.write(chunk));
            floodBlocked?.();
          };
          socket.on('error', () => {});
          push();
          return;
        }
        socket.write(first);
        socket.pipe(socket);
      });
    });
    serviceClose = () => service.server.close();
    const secret = randomBytes(32);
    white = new WhiteServer(whiteConfigFor([{ id: 'g1', secret, publicPort: 0, dataPort: 0 }]), { dataPlane: whitePlane!, logger: silentLogger() });
    await white.start();
    gray = new GrayAgent(grayConfigFor('g1', secret, white.controlPort, service.port, { pool: 8 }), silentLogger(), { dataPlane: grayPlane! });
    const ready = new Promise<void>((resolve) => gray.once('pool-ready', () => resolve()));
    gray.start();
    await ready;
    publicPort = white.portsOf('g1')!.publicPort;
  });

  after(async () => {
    await gray?.stop(200);
    await white?.stop(200);
    serviceClose?.();
  });

  it('names every engine thread relay-engine-N, so top -H, ps -L and the bench tell them from Node\'s', () => {
    const threadNames = (): string[] => fs.readdirSync('/proc/self/task').map((tid) => fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim()).sort();
    const before = threadNames();
    planeOf(3);
    const added = [...threadNames()];
    for (const name of before) {
      const k = added.indexOf(name);
      if (k >= 0) added.splice(k, 1);
    }
    assert.deepEqual(added, ['relay-engine-0', 'relay-engine-1', 'relay-engine-2']);
  });

  it('reports its threads: one entry per thread, with the pairs and held connections each owns', () => {
    const state = engineThreadsState(whitePlane!)!;
    assert.equal(state.threads, THREADS);
    assert.equal(state.perThread.length, THREADS);
    // The gray's pool: its data connections are held on the white (verified, idle) and on the
    // gray (dialed, waiting for a start header), spread over the threads.
    const held = (plane: DataPlane): number => engineThreadsState(plane)!.perThread.reduce((sum, t) => sum + t.heldConnections, 0);
    assert.ok(held(grayPlane!) >= 1, 'the gray holds its pooled connections');
    assert.ok(engineThreadsState(grayPlane!)!.perThread.filter((t) => t.heldConnections > 0).length >= 2, 'the gray dials its pool on more than one thread');
  });

  it('pairs land on more than one thread on both sides; every byte and every end is counted', async () => {
    const before = white.snapshot().grays[0]!;
    const clients: net.Socket[] = [];
    for (let i = 0; i < 16; i++) {
      const client = await connect(publicPort);
      client.write(`c${String(i).padStart(2, '0')}`);
      assert.equal((await firstBytes(client, 3)).toString(), `c${String(i).padStart(2, '0')}`);
      clients.push(client);
    }
    // With four copies of the public port, sixteen clients from sixteen source ports all hashed
    // to one copy has a chance of 4^-15.
    assert.ok(threadsWithPairs(whitePlane!).length >= 2, `white pairs per thread: ${JSON.stringify(engineThreadsState(whitePlane!))}`);
    assert.ok(threadsWithPairs(grayPlane!).length >= 2, `gray pairs per thread: ${JSON.stringify(engineThreadsState(grayPlane!))}`);
    assert.equal(engineThreadsState(whitePlane!)!.perThread.reduce((sum, t) => sum + t.pairs, 0), 16);
    assert.equal(white.snapshot().grays[0]!.activeClients, 16);
    await Promise.all(
      clients.map((client) => {
        const closed = closedBy(client);
        client.end();
        return closed;
      }),
    );
    await waitUntil(() => white.snapshot().grays[0]!.activeClients === 0, 'every pair to end');
    const after = white.snapshot().grays[0]!;
    assert.equal(after.bytesFromClients - before.bytesFromClients, 16 * 3);
    assert.equal(after.bytesToClients - before.bytesToClients, 16 * 3);
    assert.equal(after.clientsTotal - before.clientsTotal, 16);
    await waitUntil(() => threadsWithPairs(whitePlane!).length === 0 && threadsWithPairs(grayPlane!).length === 0, 'no pair left on any thread');
  });

  it('a slow reader parked on one thread does not hold up a transfer on another', async () => {
    const blocked = new Promise<void>((resolve) => (floodBlocked = resolve));
    const slow = await connect(publicPort);
    slow.pause();  // never reads: the service's flood backs up into the pair, which parks
    slow.write('S');
    await blocked;
    await waitUntil(() => threadsWithPairs(whitePlane!).length === 1, 'the slow pair to be the white\'s only pair');
    const slowThread = threadsWithPairs(whitePlane!)[0]!;
    const payload = randomBytes(512 * 1024);
    const fastThreads = new Set<number>();
    // Fast transfers until one ran on another thread than the slow pair's (each lands on a
    // thread by the kernel's hash of its source port; 3 in 4 land elsewhere); each completes.
    for (let i = 0; i < 24 && ![...fastThreads].some((t) => t !== slowThread); i++) {
      const fast = await connect(publicPort);
      fast.write(payload.subarray(0, 1));
      await firstBytes(fast, 1);
      const now = engineThreadsState(whitePlane!)!.perThread;
      for (const [t, counts] of now.entries()) if (counts.pairs > (t === slowThread ? 1 : 0)) fastThreads.add(t);
      const rest = firstBytes(fast, payload.length - 1);
      fast.end(payload.subarray(1));
      assert.ok((await rest).equals(payload.subarray(1)), 'the fast transfer arrives whole');
      fast.destroy();
    }
    assert.ok([...fastThreads].some((t) => t !== slowThread), `a fast transfer ran beside the slow pair on another thread (slow on ${slowThread}, fast on ${[...fastThreads].join(',')})`);
    // The slow one is still parked, alive, on its thread.
    assert.equal(slow.destroyed, false);
    assert.ok(engineThreadsState(whitePlane!)!.perThread[slowThread]!.pairs >= 1);
    const closed = closedBy(slow);
    slow.destroy();
    await closed;
    for (const socket of flooding) socket.destroy();
    await waitUntil(() => white.snapshot().grays[0]!.activeClients === 0, 'the slow pair to end');
  });
});

/** For one describe block: a white on a four-thread plane of its own, with the gray 'raw'
 *  (secret all ones), started before its tests and stopped after. */
function rawWhiteOnThreads(): { plane: DataPlane | null; white: () => WhiteServer } {
  const plane = noEngine() ? null : planeOf(THREADS);
  let white: WhiteServer | undefined;
  before(async () => {
    white = new WhiteServer(whiteConfigFor([{ id: 'raw', secret: Buffer.alloc(32, 1), publicPort: 0, dataPort: 0 }]), { dataPlane: plane!, logger: silentLogger() });
    await white.start();
  });
  after(async () => {
    await white?.stop(200);
  });
  return { plane, white: () => white! };
}

describe('engine threads: one counter window for every copy of the data port', { skip: noEngine() }, () => {
  const { white } = rawWhiteOnThreads();

  it('a preamble used on one thread is refused as a replay on every other; a client meets it from any thread', async () => {
    const s = await rawLogin(white().controlPort, 'raw', Buffer.alloc(32, 1), 1);
    const first = await sendOnDataPort(s.dataPort, s.preamble(1));
    await waitUntil(() => white().snapshot().grays[0]!.poolIdle === 1, 'the first to be verified and idle');
    // The client lands on any of the four threads: it is joined with the one connection,
    // wherever that was verified (moved once if need be).
    const client = net.connect({ host: '127.0.0.1', port: white().portsOf('raw')!.publicPort });
    client.on('error', () => {});
    assert.equal((await firstBytes(first, START_HEADER_BYTES)).length, START_HEADER_BYTES);
    // Eight replays from eight source ports: all on the first's thread has a chance of 4^-8.
    for (let i = 0; i < 8; i++) await closedBy(await sendOnDataPort(s.dataPort, s.preamble(1)));
    await waitUntil(() => (white().snapshot().counters.dataRejections[ErrorCodes.PREAMBLE_REPLAY] ?? 0) === 8, 'eight replays refused');
    client.destroy();
    first.destroy();
    s.socket.destroy();
  });
});

describe('engine threads: a data connection goes to a client that waits, not to one that left', { skip: noEngine() }, () => {
  const { plane, white } = rawWhiteOnThreads();

  const heldPerThread = (): number[] => engineThreadsState(plane!)!.perThread.map((t) => t.heldConnections);
  /** Opens a connection with open() and tells which thread accepted it (its held count rose). */
  async function landed<T>(open: () => Promise<T>): Promise<{ conn: T; thread: number; heldBefore: number }> {
    const before = heldPerThread();
    const conn = await open();
    let thread = -1;
    await waitUntil(() => (thread = heldPerThread().findIndex((n, i) => n > before[i]!)) >= 0, 'the connection to be held on a thread');
    return { conn, thread, heldBefore: before[thread]! };
  }

  it('clients that reset while waiting leave no trace on their threads: the next data connection finds the one still waiting, wherever it was verified', async () => {
    const s = await rawLogin(white().controlPort, 'raw', Buffer.alloc(32, 1), 1);
    const { publicPort } = white().portsOf('raw')!;
    const gray = () => white().snapshot().grays[0]!;
    // The pool is empty, so every client waits, each on the thread that accepted it, until one
    // thread (kept) has fewer than each of the three others.
    const clients: { conn: net.Socket; thread: number }[] = [];
    const perThread = (): number[] => [0, 1, 2, 3].map((k) => clients.filter((c) => c.thread === k).length);
    const fewest = (): number => {
      const counts = perThread();
      const min = Math.min(...counts);
      return min > 0 && counts.filter((n) => n === min).length === 1 ? counts.indexOf(min) : -1;
    };
    while (clients.length < 64 && fewest() < 0) {
      const client = await landed(() => connect(publicPort));
      client.conn.on('error', () => {});
      clients.push(client);
      await waitUntil(() => gray().pendingClients === clients.length, 'the client to wait');
    }
    const kept = fewest();
    assert.ok(kept >= 0, `clients per thread: ${JSON.stringify(perThread())}`);
    // kept's clients stay; every other resets while it waits. Were the threads' waiting counts
    // still counting the gone ones, each of the three others would claim more clients than
    // kept, and the connection would be sent from one to the next until it stopped, idle, on a
    // thread with none, while kept's clients waited out their time.
    const staying = clients.filter((c) => c.thread === kept);
    for (const c of clients) if (c.thread !== kept) c.conn.resetAndDestroy();
    await waitUntil(() => gray().pendingClients === staying.length, 'the others to have left the queue');
    const stays = staying[0]!;
    // A data connection verified on any thread but the waiting client's.
    let data: net.Socket | undefined;
    for (let tries = 0; !data && tries < 32; tries++) {
      const opened = await landed(() => connect(s.dataPort));
      opened.conn.on('error', () => {});
      if (opened.thread !== kept) data = opened.conn;
      else {
        opened.conn.destroy();
        await waitUntil(() => heldPerThread()[opened.thread]! <= opened.heldBefore, 'the unused connection to go');
      }
    }
    assert.ok(data, 'a data connection on another thread than the waiting client');
    stays.conn.write('ping');  // held in the kernel until the join, which sends it behind the start header
    data.write(s.preamble(1));
    const received = await within(firstBytes(data, START_HEADER_BYTES + 4), 3000, 'the start header of the waiting client');
    assert.equal(received.subarray(START_HEADER_BYTES).toString(), 'ping');
    for (const c of staying) c.conn.destroy();
    data.destroy();
    s.socket.destroy();
  });
});
