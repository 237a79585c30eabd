// Reconnect storm: N gray sessions (N GrayAgents in this process, each its own gray id with a pool
// of 1) logged in to one `relay white` process; the white is killed with SIGKILL and restarted, and
// every session comes back at once. Measured: the time from the restarted white listening to all
// N pools ready again, the white's RSS per session, its control-connection refusals by reason (the
// admission limits at work: every session comes from 127.0.0.1, over unauthenticated_per_ip), and
// its descriptors at the peak. Used by test/e2e/storm.test.ts (100 sessions in `npm test`) and
// bench/storm.ts (`npm run storm`, N = 1000).
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { grayConfigInCode } from '../../src/config/in-code.js';
import { GrayAgent } from '../../src/engine/gray/agent.js';
import { DEFAULT_LIMITS } from '../../src/limits.js';
import { silentLogger } from '../../src/log.js';
import { startService } from '../helpers/tunnel.js';
import { E2E_ENGINE_THREADS, freePort, runRelay, tempDir, type RelayProcess } from './harness.js';
import { testDataPlane } from '../helpers/data-plane.js';

export interface StormOptions {
  readonly sessions: number;
  readonly reconnectBaseMs: number;
  readonly reconnectMaxMs: number;
  /** Deadline for all sessions to be back after the restarted white listens. */
  readonly boundMs: number;
  /** The white's limits.unauthenticated_per_ip; its default (16) when absent. */
  readonly unauthenticatedPerIp?: number;
  readonly log?: (line: string) => void;
}

export interface StormFigures {
  readonly sessions: number;
  /** First join, from nothing connected (a storm too). */
  readonly firstJoinMs: number;
  /** From the restarted white's "listening" to every pool ready again. */
  readonly allBackMs: number;
  readonly halfBackMs: number;
  readonly whiteRssIdleBytes: number;
  readonly whiteRssConnectedBytes: number;
  readonly rssPerSessionBytes: number;
  readonly peakFds: number;
  readonly fdBound: number;
  readonly controlRefusals: Record<string, number>;
  readonly whiteAlive: boolean;
  readonly unauthenticatedPerIp: number;
}

const WHITE_HOST = '127.0.2.1';

function procStats(pid: number): { rssBytes: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  return { rssBytes: Number(match?.[1] ?? 0) * 1024, fds: readdirSync(`/proc/${pid}/fd`).length };
}

async function controlRefusals(metricsPort: number): Promise<Record<string, number>> {
  const res = await request(`http://${WHITE_HOST}:${metricsPort}/metrics`);
  const out: Record<string, number> = {};
  for (const m of (await res.body.text()).matchAll(/^relay_control_rejections_total\{reason="([^"]+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/** Resolves once every agent has emitted `event` (after this call), with the time of each. */
function allEmit(agents: readonly GrayAgent[], event: 'pool-ready' | 'disconnected', boundMs: number, what: string): Promise<number[]> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const times: number[] = [];
    const pending = new Set(agents);
    const timer = setTimeout(() => {
      // Where the stragglers are: connected or not, and their last errors.
      const how = new Map<string, number>();
      for (const a of pending) {
        const s = a.state();
        const key = `${s.connected ? `connected, ${s.poolIdle} idle` : 'not connected'}; ${s.lastError?.code ?? 'no error'}`;
        how.set(key, (how.get(key) ?? 0) + 1);
      }
      reject(new Error(`${what}: ${times.length} of ${agents.length} within ${boundMs} ms; the others: ${JSON.stringify(Object.fromEntries(how))}`));
    }, boundMs);
    for (const a of agents) {
      void once(a, event).then(() => {
        pending.delete(a);
        times.push(Date.now() - start);
        if (times.length === agents.length) {
          clearTimeout(timer);
          resolve(times.sort((x, y) => x - y));
        }
      });
    }
  });
}

export async function runStorm(o: StormOptions): Promise<StormFigures> {
  const log = o.log ?? (() => {});
  const dir = await tempDir();
  const service = await startService();
  const secrets = Array.from({ length: o.sessions }, () => randomBytes(32));
  const [control, metrics] = [await freePort(), await freePort()];
  const whitePath = join(dir.path, 'white.yaml');
  let white: RelayProcess | null = null;
  const agents: GrayAgent[] = [];
  const start = async (): Promise<RelayProcess> => {
    const w = runRelay(['white', '--config', whitePath, '--no-console', '--bind', WHITE_HOST, '--control-listen', `${WHITE_HOST}:${control}`, '--metrics-listen', `${WHITE_HOST}:${metrics}`]);
    await w.waitForMsg('admin listening', 120_000);
    return w;
  };
  try {
    // Ports on the white's own loopback address, a block free on 127.0.0.1's ephemeral range side.
    for (let attempt = 0; ; attempt++) {
      const base = 10_000 + Math.floor(Math.random() * (28_000 - 2 * o.sessions));
      const lines = ['control: { listen: "127.0.0.1:1" }', 'admin: { socket: null }', 'log: { level: warn }'];
      if (o.unauthenticatedPerIp !== undefined) lines.push(`limits: { unauthenticated_per_ip: ${o.unauthenticatedPerIp} }`);
      lines.push('grays:');
      secrets.forEach((s, i) => lines.push(`  - { id: s${i}, secret: "${s.toString('base64url')}", public_port: ${base + 2 * i}, data_port: ${base + 2 * i + 1} }`));
      await writeFile(whitePath, `${lines.join('\n')}\n`);
      try {
        white = await start();
        break;
      } catch (err) {
        if (attempt >= 2) throw err;
        log(`white did not start on port block ${base} (${(err as Error).message.slice(0, 120)}); another block`);
      }
    }
    const idle = procStats(white.child.pid!);
    for (const [i, secret] of secrets.entries()) {
      const config = grayConfigInCode(`s${i}`, secret, control, service.port, { pool: 1, log: { level: 'silent' }, whites: [{ host: WHITE_HOST, port: control }] }, {
        reconnectBaseMs: o.reconnectBaseMs,
        reconnectMaxMs: o.reconnectMaxMs,
      });
      agents.push(new GrayAgent(config, silentLogger(), { dataPlane: testDataPlane() }));
    }
    // The first join is a storm too, but not the one under test: a looser deadline.
    const firstReady = allEmit(agents, 'pool-ready', 3 * o.boundMs, 'first join');
    for (const a of agents) a.start();
    const firstJoinMs = (await firstReady).at(-1)!;
    const connected = procStats(white.child.pid!);
    log(`first join of ${o.sessions} sessions: ${firstJoinMs} ms; white RSS ${(idle.rssBytes / 1048576).toFixed(1)} → ${(connected.rssBytes / 1048576).toFixed(1)} MiB`);

    // kill -9, then restart: every session is reconnecting at once.
    const down = allEmit(agents, 'disconnected', 30_000, 'sessions noticing the killed white');
    await white.kill('SIGKILL');
    await down;
    const backFrom = Date.now();
    const back = allEmit(agents, 'pool-ready', o.boundMs + 120_000, 'sessions back');
    white = await start();
    const listeningLine = await white.waitForMsg('listening');
    const t0 = Number(listeningLine.time ?? Date.now());
    let peakFds = 0;
    const pid = white.child.pid!;
    const sampler = setInterval(() => {
      try {
        peakFds = Math.max(peakFds, procStats(pid).fds);
      } catch {
        // the process is gone: the check below reports it
      }
    }, 100);
    const times = await back.finally(() => clearInterval(sampler));
    const allBackMs = backFrom + times.at(-1)! - t0;
    const halfBackMs = backFrom + times[Math.floor(times.length / 2)]! - t0;
    const refusals = await controlRefusals(metrics);
    const whiteAlive = white.child.exitCode === null && white.child.signalCode === null;
    // Listeners (2 per gray, on each engine thread: runRelay's RELAY_ENGINE_THREADS), control + one pooled connection per session, the
    // admission cap, and a margin for the process's own (stdio, epoll, engine, metrics).
    const unauthenticatedPerIp = o.unauthenticatedPerIp ?? DEFAULT_LIMITS.unauthenticatedPerIp;
    const fdBound = (2 * Number(E2E_ENGINE_THREADS) + 2) * o.sessions + DEFAULT_LIMITS.unauthenticatedTotal + 128;
    return {
      sessions: o.sessions,
      firstJoinMs,
      allBackMs,
      halfBackMs,
      whiteRssIdleBytes: idle.rssBytes,
      whiteRssConnectedBytes: connected.rssBytes,
      rssPerSessionBytes: Math.round((connected.rssBytes - idle.rssBytes) / o.sessions),
      peakFds,
      fdBound,
      controlRefusals: refusals,
      whiteAlive,
      unauthenticatedPerIp,
    };
  } finally {
    await Promise.all(agents.map((a) => a.stop(0)));
    await white?.kill('SIGKILL');
    service.server.close();
    await dir.cleanup();
  }
}
