// A client whose network vanishes (its link goes down: no FIN, no reset, nothing) is noticed by
// the white's TCP keepalive on client sockets, and its descriptors are freed. Real `relay white`
// and `relay gray` processes; the client lives in a network namespace this test creates, joined
// to the white by a veth pair, and the test brings that link down. Needs root and iproute2 (CI
// runs as root): without them it fails, saying why, rather than skip.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { ending, startService } from '../helpers/tunnel.js';
import { runRelay, tempDir, writeDeployment, type RelayProcess } from './harness.js';
import { LinkedNamespace } from './netns.js';

/** Socket inodes of the process's descriptors. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

/** Inodes of this namespace's TCP sockets connected to ipv4:any (from /proc/net/tcp). */
function socketsTo(ipv4: string): string[] {
  const hex = ipv4
    .split('.')
    .map((o) => Number(o).toString(16).toUpperCase().padStart(2, '0'))
    .reverse()
    .join('');
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length > 9 && f[2]!.startsWith(`${hex}:`))
    .map((f) => f[9]!)
    .filter((inode) => inode !== '0');
}

// Both data planes, one after the other (each with its own namespace).
describe('e2e: a client whose network vanishes', () => {
  for (const [index, plane] of (['splice', 'js'] as const).entries()) describe(`${plane} data plane`, () => {
    const ns = new LinkedNamespace('v', index);
    let dir: { path: string; cleanup: () => Promise<void> };
    let white: RelayProcess | undefined;
    let gray: RelayProcess | undefined;
    let client: ChildProcess | undefined;
    let service: Awaited<ReturnType<typeof startService>>;
    const serviceEnds: Array<Promise<string>> = [];

    before(() => ns.create());
    after(async () => {
      if (client && client.exitCode === null) {
        client.kill('SIGKILL');
        await new Promise((r) => client!.once('exit', r));
      }
      await gray?.kill();
      await white?.kill();
      service?.server.close();
      await dir?.cleanup();
      ns.remove();
    });

    it('the white notices by keepalive, resets the pair (the service sees it too) and frees the client\'s descriptors', { timeout: 60_000 }, async () => {
      dir = await tempDir();
      service = await startService((socket) => {
        serviceEnds.push(ending(socket));
        socket.once('data', (c: Buffer) => socket.write(c));
      });
      const d = await writeDeployment(dir.path, {
        targetPort: service.port,
        bind: ns.hostIp,
        dataHost: ns.hostIp,
        pool: 2,
        // Data connections come from the white's veth address, the control connection from 127.0.0.1.
        whiteExtra: 'data_source_check: false\nlimits: { client_keep_alive_delay_ms: 1000 }',
      });
      const env = { RELAY_DATA_PLANE: plane, RELAY_LOG_LEVEL: 'debug' };
      white = runRelay(['white', '--config', d.whitePath], env);
      await white.waitForMsg('listening');
      gray = runRelay(['gray', '--config', d.grayPath], env);
      await gray.waitForMsg('pool ready');

      const script = `const s = require('net').connect(${d.publicPort}, '${ns.hostIp}', () => s.write('hello'));
        s.once('data', () => console.log('paired'));
        s.on('error', () => {});`;
      client = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        client!.stdout!.setEncoding('utf8').on('data', (t: string) => t.includes('paired') && resolve());
        client!.once('exit', (code) => reject(new Error(`the client in the namespace exited (${code}) before it was paired`)));
      });

      const pid = white.child.pid!;
      const held = socketsTo(ns.nsIp).filter((inode) => socketInodes(pid).has(inode));
      assert.equal(held.length, 1, 'the white holds one descriptor for the client');

      ns.cut();
      const closed = await white.waitFor((l) => l.msg === 'client closed', 'the white ending the vanished client\'s pair', 30_000);
      assert.match(String(closed.reason), /ETIMEDOUT|timed out/, 'ended by keepalive');
      assert.equal(socketInodes(pid).has(held[0]!), false, 'the client\'s descriptor is closed');
      assert.deepEqual(socketsTo(ns.nsIp), [], 'no socket to the client is left on the white');
      assert.equal(serviceEnds.length, 1);
      assert.equal(await serviceEnds[0], 'reset', 'the gray reset the service connection in turn');
    });
  });
});
