// A gray out of local ports toward its white (docs/deploy.md, "Local ports on the gray"): every
// data connection whose service closed first leaves the gray's end in TIME_WAIT, so with the
// kernel's reuse off (as on any path that is not loopback) the gray can dial the white's data port
// from each ephemeral port once a minute. Real `relay white` and `relay gray` processes in a
// network namespace this test creates, with 100 ephemeral ports and net.ipv4.tcp_tw_reuse=0;
// the service (closing first) and the clients are here, across a veth link. Needs root and
// iproute2, like vanished-client.test.ts. Data connections that carry one client after another
// (both ends with the engine) leave nothing in TIME_WAIT, and the gray never runs out.
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { runRelay, tempDir, writeDeployment, type LogLine, type RelayProcess } from './harness.js';
import { LinkedNamespace } from './netns.js';

const PORTS = '40000 40099';
const EXHAUSTED = 'RELAY_ERR_LOCAL_PORTS_EXHAUSTED';

/** One client: sends a line, reads the answer to its end. True when the answer came whole. */
function client(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host, () => socket.write('ping\n'));
    let answer = '';
    socket.setEncoding('utf8').on('data', (text: string) => (answer += text));
    socket.setTimeout(5_000, () => socket.destroy());
    socket.on('error', () => {});
    socket.on('close', () => resolve(answer === 'pong\n'));
  });
}

// Each gray's data plane against a white of the other, so the data connections are raw, each used
// by one client; and both ends with the engine, whose data connections carry one client after
// another (docs/architecture.md, "Framed data connections") and so never run the gray out.
const setups = [
  { gray: 'splice', white: 'js' },
  { gray: 'js', white: 'splice' },
  { gray: 'splice', white: 'splice' },
] as const;

describe('e2e: local ports on the gray', () => {
  for (const [index, planes] of setups.entries()) describe(`${planes.gray} gray, ${planes.white} white`, () => {
    const reused = planes.gray === 'splice' && planes.white === 'splice';
    const ns = new LinkedNamespace('p', index);
    let dir: { path: string; cleanup: () => Promise<void> } | undefined;
    let white: RelayProcess | undefined;
    let gray: RelayProcess | undefined;
    let service: net.Server | undefined;

    before(() => {
      ns.create();
      ns.exec('sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=0', `net.ipv4.ip_local_port_range=${PORTS}`);
    });
    after(async () => {
      await gray?.kill();
      await white?.kill();
      service?.close();
      await dir?.cleanup();
      ns.remove();
    });

    const title = reused
      ? 'reuses its data connections: four times the range of clients, and no port runs out'
      : 'runs out after about its range of clients, says why and what lifts it, and serves again with tcp_tw_reuse=1';
    it(title, { timeout: 90_000 }, async () => {
      // The service answers and closes first, as an HTTP server answering `Connection: close` does.
      service = net.createServer((socket) => {
        socket.on('error', () => {});
        socket.once('data', () => socket.end('pong\n'));
      });
      await new Promise<void>((resolve) => service!.listen(0, ns.hostIp, resolve));
      const servicePort = (service.address() as AddressInfo).port;
      dir = await tempDir();
      // The ports come from this namespace, where they are free; the other one has nothing bound.
      const d = await writeDeployment(dir.path, { targetHost: ns.hostIp, targetPort: servicePort, bind: '0.0.0.0', id: 'ports', pool: 4, whiteExtra: 'limits: { client_wait_ms: 500 }' });
      white = runRelay(['white', '-c', d.whitePath], { RELAY_DATA_PLANE: planes.white }, ns.name);
      await white.waitForMsg('listening');
      gray = runRelay(['gray', '-c', d.grayPath], { RELAY_DATA_PLANE: planes.gray }, ns.name);
      await gray.waitForMsg('pool ready');
      const connected = await white.waitForMsg('gray connected');
      assert.equal(connected.reuse, reused, 'the session reuses its data connections only with the engine at both ends');

      // Four at a time until the gray says it is out of ports (each client leaves one port in
      // TIME_WAIT toward the data port for a minute); bounded at four times the range.
      const isExhausted = (l: LogLine): boolean => l.code === EXHAUSTED;
      let served = 0;
      let tried = 0;
      while (tried < 400 && !gray.lines.some(isExhausted)) {
        const batch = await Promise.all([0, 1, 2, 3].map(() => client(ns.nsIp, d.publicPort)));
        tried += batch.length;
        served += batch.filter(Boolean).length;
      }
      if (reused) {
        assert.equal(served, 400, `served ${served} of ${tried}`);
        assert.deepEqual(gray.lines.filter(isExhausted), []);
        return;
      }
      const said = await gray.waitFor(isExhausted, EXHAUSTED, 10_000);
      assert.ok(served >= 50 && served <= 110, `served ${served} of ${tried} before running out: about the 100 ports of the range`);
      assert.equal(said.level, 50, 'logged as an error');
      assert.equal(said.msg, 'no local port left for data connections');
      assert.equal(said.data, `127.0.0.1:${d.dataPort}`);
      assert.equal(said.portRange, '40000-40099');
      assert.equal(said.twReuse, '0');
      const detail = String(said.detail);
      assert.match(detail, /100 ephemeral ports \(40000-40099\)/);
      assert.ok(detail.includes(`TIME_WAIT toward 127.0.0.1:${d.dataPort}`), detail);
      assert.match(detail, /set net\.ipv4\.tcp_tw_reuse=1 \(it is 0;/);
      assert.match(detail, /docs\/deploy\.md/);

      // The remedy: with reuse on, a port in TIME_WAIT can dial the same address again once its
      // last segment is a second old. So the clients here are paced to 50 a second (the kernel's
      // one-second rule is the only timing in this test), 150 of them: half again the range.
      ns.exec('sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1');
      let recovered = false;
      for (let i = 0; i < 100 && !recovered; i++) recovered = await client(ns.nsIp, d.publicPort); // the gray's dials retry with backoff
      assert.ok(recovered, 'served again after tcp_tw_reuse=1');
      const linesBefore = gray.lines.length;
      let servedAfter = 0;
      for (let i = 0; i < 150; i++) {
        const pace = new Promise((resolve) => setTimeout(resolve, 20));
        if (await client(ns.nsIp, d.publicPort)) servedAfter += 1;
        await pace;
      }
      assert.equal(servedAfter, 150, 'every client served, with more clients than the range has ports');
      assert.deepEqual(gray.lines.slice(linesBefore).filter(isExhausted), [], 'not out of ports again');
    });
  });
});
