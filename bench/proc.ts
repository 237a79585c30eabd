// Child processes of the harness: spawned with their output consumed (a full pipe would stall a
// process being measured), the last lines kept for error messages, and every one of them ended
// by pid when the harness exits, whatever the reason.
import { type ChildProcess, fork, spawn } from 'node:child_process';
import readline from 'node:readline';
import { sleep } from './common.js';
import type { LoadgenReply, RunRequest, Workload, WorkloadResult } from './types.js';

const live = new Set<ChildProcess>();

function killAllSync(): void {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
}
process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    killAllSync();
    process.exit(130);
  });
}

export interface Managed {
  name: string;
  child: ChildProcess;
  pid: number;
  /** Last lines of stdout+stderr, for error messages. */
  tail: string[];
  /** Resolves with a description once the process has exited. */
  exited: Promise<string>;
  hasExited: () => boolean;
  /** Resolves with the first line (current or future) matching pred; rejects on exit or timeout. */
  waitForLine: (pred: (line: string) => boolean, timeoutMs: number, what: string) => Promise<string>;
  stop: (graceMs?: number) => Promise<void>;
}

const TAIL_LINES = 40;

export function spawnManaged(
  name: string,
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Managed {
  const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const tail: string[] = [];
  const waiters = new Set<{ pred: (l: string) => boolean; resolve: (l: string) => void }>();
  const onLine = (line: string): void => {
    tail.push(line.length > 400 ? line.slice(0, 400) + '…' : line);
    if (tail.length > TAIL_LINES) tail.shift();
    for (const w of waiters) {
      if (w.pred(line)) {
        waiters.delete(w);
        w.resolve(line);
      }
    }
  };
  if (child.stdout) readline.createInterface({ input: child.stdout }).on('line', onLine);
  if (child.stderr) readline.createInterface({ input: child.stderr }).on('line', onLine);
  let exitedFlag = false;
  const exited = new Promise<string>((resolve) => {
    child.on('error', (e) => {
      exitedFlag = true;
      live.delete(child);
      resolve(`could not start ${cmd}: ${e.message}`);
    });
    child.on('exit', (code, signal) => {
      exitedFlag = true;
      live.delete(child);
      resolve(signal ? `killed by ${signal}` : `exited with code ${code}`);
    });
  });
  const m: Managed = {
    name,
    child,
    pid: child.pid ?? -1,
    tail,
    exited,
    hasExited: () => exitedFlag,
    waitForLine(pred, timeoutMs, what) {
      const seen = tail.find(pred);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise<string>((resolve, reject) => {
        const w = { pred, resolve: (l: string) => (clearTimeout(timer), resolve(l)) };
        waiters.add(w);
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`${name}: no ${what} within ${timeoutMs} ms${lastLines(tail)}`));
        }, timeoutMs);
        exited.then((how) => {
          if (!waiters.has(w)) return;
          waiters.delete(w);
          clearTimeout(timer);
          reject(new Error(`${name} ${how} before ${what}${lastLines(tail)}`));
        });
      });
    },
    async stop(graceMs = 3000) {
      if (exitedFlag) return;
      child.kill('SIGTERM');
      const gone = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
      if (!gone) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
  return m;
}

export function lastLines(tail: readonly string[], n = 6): string {
  if (tail.length === 0) return '';
  return '\n    | ' + tail.slice(-n).join('\n    | ');
}

/** Pino JSON line with this msg? Tolerates non-JSON lines. */
export function isLogMsg(line: string, msg: string): boolean {
  if (!line.includes(msg)) return false;
  try {
    const o = JSON.parse(line) as { msg?: unknown };
    return o.msg === msg;
  } catch {
    return false;
  }
}

/** Fork one of the compiled bench scripts with an IPC channel. */
export function forkScript(script: string, name: string): { child: ChildProcess; pid: number; tail: string[] } {
  const child = fork(script, [], { execArgv: [], stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  live.add(child);
  child.on('exit', () => live.delete(child));
  const tail: string[] = [];
  const keep = (l: string): void => {
    tail.push(l);
    if (tail.length > TAIL_LINES) tail.shift();
  };
  if (child.stdout) readline.createInterface({ input: child.stdout }).on('line', keep);
  if (child.stderr) readline.createInterface({ input: child.stderr }).on('line', (l) => {
    keep(l);
    process.stderr.write(`[${name}] ${l}\n`);
  });
  return { child, pid: child.pid ?? -1, tail };
}

export function waitMessage<T>(child: ChildProcess, pred: (m: unknown) => m is T, timeoutMs: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: unknown): void => {
      if (pred(m)) {
        cleanup();
        resolve(m);
      }
    };
    const onExit = (code: number | null): void => {
      cleanup();
      reject(new Error(`${what}: child exited (${code})`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${what}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      child.off('message', onMsg);
      child.off('exit', onExit);
    };
    child.on('message', onMsg);
    child.on('exit', onExit);
  });
}

/** The load generator child: one workload at a time. */
export class Loadgen {
  private nextId = 1;
  private constructor(
    readonly child: ChildProcess,
    readonly pid: number,
  ) {}

  static async start(script: string): Promise<Loadgen> {
    const { child, pid } = forkScript(script, 'loadgen');
    await waitMessage(child, (m): m is LoadgenReply => (m as LoadgenReply)?.type === 'ready', 10_000, 'loadgen start');
    return new Loadgen(child, pid);
  }

  async run(port: number, workload: Workload, timeoutMs: number): Promise<WorkloadResult> {
    const id = this.nextId++;
    const req: RunRequest = { type: 'run', id, port, workload };
    const answer = waitMessage(
      this.child,
      (m): m is LoadgenReply => {
        const r = m as LoadgenReply;
        return (r?.type === 'result' || r?.type === 'failed') && r.id === id;
      },
      timeoutMs,
      `workload ${workload.kind}`,
    );
    this.child.send(req);
    const r = await answer;
    if (r.type === 'failed') throw new Error(r.error);
    if (r.type !== 'result') throw new Error('unexpected reply');
    return r.result;
  }

  stop(): void {
    this.child.kill('SIGTERM');
  }
}
