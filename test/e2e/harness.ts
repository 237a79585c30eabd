// Runs real `relay` processes for end-to-end tests: writes configs into a temp dir, spawns the
// compiled CLI, follows its JSON log lines, and lets a test wait for a log event (never a sleep).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** dist/test/e2e → dist/src/cli/relay.js */
export const RELAY_CLI = resolve(here, '../../src/cli/relay.js');
const RELAYCTL_CLI = resolve(here, '../../src/cli/relayctl.js');

export type LogLine = Record<string, unknown> & { msg?: string };

export class RelayProcess {
  readonly lines: LogLine[] = [];
  readonly stderr: string[] = [];
  private readonly waiters: Array<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(readonly child: ChildProcess) {
    let buffered = '';
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      buffered += text;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const raw = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let line: LogLine;
        try {
          line = JSON.parse(raw) as LogLine;
        } catch {
          line = { msg: raw, plain: true };
        }
        this.lines.push(line);
        for (let i = this.waiters.length - 1; i >= 0; i--) {
          const w = this.waiters[i]!;
          if (w.match(line)) {
            this.waiters.splice(i, 1);
            w.resolve(line);
          }
        }
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (t: string) => this.stderr.push(t));
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Resolves with the first log line (past or future) that matches; rejects if the process exits first or after timeoutMs. */
  waitFor(match: (l: LogLine) => boolean, what: string, timeoutMs = 20_000): Promise<LogLine> {
    const seen = this.lines.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; last lines: ${this.tail()}`)), timeoutMs);
      const waiter = {
        match,
        resolve: (l: LogLine) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      this.waiters.push(waiter);
      void this.exited.then(({ code, signal }) => {
        const i = this.waiters.indexOf(waiter);
        if (i < 0) return;
        this.waiters.splice(i, 1);
        clearTimeout(timer);
        reject(new Error(`process exited (${code ?? signal}) while waiting for ${what}; stderr: ${this.stderr.join('')}; last lines: ${this.tail()}`));
      });
    });
  }

  waitForMsg(msg: string, timeoutMs?: number): Promise<LogLine> {
    return this.waitFor((l) => l.msg === msg, `log "${msg}"`, timeoutMs);
  }

  tail(n = 8): string {
    return this.lines
      .slice(-n)
      .map((l) => JSON.stringify(l))
      .join('\n');
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

/** The engine threads of the relay processes the tests start: four (more than this 2-core
 *  machine has, which must be correct too), or RELAY_ENGINE_THREADS when the test run sets it.
 *  A test that keeps one thread says so in its files (writeDeployment's threads) and passes
 *  RELAY_ENGINE_THREADS: '' so the file decides. */
export const E2E_ENGINE_THREADS = process.env.RELAY_ENGINE_THREADS || '4';

/** netns: run it inside that network namespace (netns.ts). */
export function runRelay(args: string[], env: Record<string, string> = {}, netns?: string): RelayProcess {
  const command = [process.execPath, RELAY_CLI, ...args];
  if (netns !== undefined) command.unshift('ip', 'netns', 'exec', netns);
  const child = spawn(command[0]!, command.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RELAY_LOG_LEVEL: 'info', RELAY_ENGINE_THREADS: E2E_ENGINE_THREADS, ...env },
  });
  return new RelayProcess(child);
}

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runToEnd(cli: string, args: string[], env: Record<string, string>): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs `relay` to completion and returns its exit code and output. */
export function runRelayToEnd(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return runToEnd(RELAY_CLI, args, env);
}

/** Runs `relayctl` to completion and returns its exit code and output. */
export function relayctl(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return runToEnd(RELAYCTL_CLI, args, env);
}

/** The kernel's ephemeral range: ports it hands to outgoing connections (and to listen(0)). */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 11000 ? low : 32768;
  } catch {
    return 32768;
  }
}

/** Ports freePort has handed out in this process: one not yet bound (a config being written)
 *  must not be handed out again. */
const handedOut = new Set<number>();

/** A port free on host now, below the ephemeral range: a test that restarts a process on the same
 *  port must not find it taken by some outgoing connection's local port (or by a connection to
 *  itself, which Linux makes when a dial's source port equals its closed destination port).
 *  Never one it handed out before in this process. */

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const high = ephemeralLow() - 1;
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 10000 + Math.floor(Math.random() * (high - 10000));
    if (handedOut.has(port)) continue;
    const server = net.createServer();
    const bound = await new Promise<boolean>((r) => {
      server.once('error', () => r(false));
      server.listen(port, host, () => r(true));
    });
    if (!bound) continue;
    await new Promise<void>((r) => server.close(() => r()));
    handedOut.add(port);
    return port;
  }
  throw new Error(`no free port below ${high + 1} on ${host} in 200 tries`);
}

export async function tempDir(): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), 'relay-e2e-'));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

export interface Deployment {
  readonly dir: string;
  readonly secret: string;
  readonly controlPort: number;
  readonly publicPort: number;
  readonly dataPort: number;
  readonly whitePath: string;
  readonly grayPath: string;
}

/** Writes a white.yaml with one gray and the matching gray.yaml. */
export async function writeDeployment(
  dir: string,
  opts: {
    targetPort: number;
    /** The service's host (127.0.0.1 unless given). */
    targetHost?: string;
    bind?: string;
    id?: string;
    graySecret?: string;
    grayId?: string;
    whiteHost?: string;
    dataHost?: string;
    pool?: number;
    whiteExtra?: string;
    grayExtra?: string;
    /** The white's admin socket (for relayctl); none by default. */
    adminSocket?: string;
    /** engine.threads in both files (RELAY_ENGINE_THREADS, which runRelay sets, overrides it). */
    threads?: number;
  },
): Promise<Deployment> {
  const engine = opts.threads === undefined ? '' : `engine: { threads: ${opts.threads} }`;
  const secret = randomBytes(32).toString('base64url');
  const [controlPort, publicPort, dataPort] = [await freePort(), await freePort(), await freePort()];
  const id = opts.id ?? 'e2e';
  const whitePath = join(dir, 'white.yaml');
  const grayPath = join(dir, 'gray.yaml');
  await writeFile(
    whitePath,
    [
      `control: { listen: "127.0.0.1:${controlPort}" }`,
      `bind: "${opts.bind ?? '127.0.0.1'}"`,
      `admin: { socket: ${opts.adminSocket ? JSON.stringify(opts.adminSocket) : 'null'} }`,
      engine,
      opts.whiteExtra ?? '',
      `grays:`,
      `  - id: ${id}`,
      `    secret: "${secret}"`,
      `    public_port: ${publicPort}`,
      `    data_port: ${dataPort}`,
      '',
    ].join('\n'),
  );
  await writeFile(
    grayPath,
    [
      `white: "${opts.whiteHost ?? '127.0.0.1'}:${controlPort}"`,
      opts.dataHost ? `data_host: "${opts.dataHost}"` : '',
      `id: ${opts.grayId ?? id}`,
      `secret: "${opts.graySecret ?? secret}"`,
      `target: "${opts.targetHost ?? '127.0.0.1'}:${opts.targetPort}"`,
      `pool: ${opts.pool ?? 8}`,
      `limits: { reconnect_base_ms: 100, reconnect_max_ms: 1000 }`,
      engine,
      opts.grayExtra ?? '',
      '',
    ].join('\n'),
  );
  return { dir, secret, controlPort, publicPort, dataPort, whitePath, grayPath };
}
