// The pieces every mode shares: the service child, the load generator child, machine facts for
// the results file, and writing results.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BENCH_DIST, REPO_ROOT, openFilesLimit } from './common.js';
import { Loadgen, forkScript, waitMessage } from './proc.js';
import { haproxyVersion } from './targets.js';

export interface Service {
  port: number;
  pid: number;
  stop: () => void;
}

export async function startService(): Promise<Service> {
  const { child, pid } = forkScript(path.join(BENCH_DIST, 'service.js'), 'service');
  const ready = await waitMessage(
    child,
    (m): m is { type: 'ready'; port: number } => (m as { type?: string })?.type === 'ready',
    10_000,
    'service start',
  );
  return { port: ready.port, pid, stop: () => child.kill('SIGTERM') };
}

export function startLoadgen(): Promise<Loadgen> {
  return Loadgen.start(path.join(BENCH_DIST, 'loadgen.js'));
}

export function machineInfo(haproxyBin: string): Record<string, unknown> {
  const cpus = os.cpus();
  const hv = haproxyVersion(haproxyBin);
  let gitCommit: string | null = null;
  try {
    // Read-only: which commit was measured.
    gitCommit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    /* not a git checkout */
  }
  const files = openFilesLimit();
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    haproxy: hv.ok ? hv.version : null,
    openFiles: { soft: Number.isFinite(files.soft) ? files.soft : null, hard: Number.isFinite(files.hard) ? files.hard : null },
    gitCommit,
    hostname: os.hostname(),
  };
}

/** ISO 8601 basic format (no colons, safe in every file system), e.g. 20251124T231005Z. */
export function stamp(d = new Date()): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

export function writeResults(outDir: string, name: string, json: unknown, svg: string | null): { json: string; svg: string | null } {
  fs.mkdirSync(outDir, { recursive: true });
  const jsonPath = path.join(outDir, `${name}.json`);
  // Write then rename, so a reader never sees half a file.
  fs.writeFileSync(jsonPath + '.tmp', JSON.stringify(json, null, 2) + '\n');
  fs.renameSync(jsonPath + '.tmp', jsonPath);
  let svgPath: string | null = null;
  if (svg !== null) {
    svgPath = path.join(outDir, `${name}.svg`);
    fs.writeFileSync(svgPath, svg);
  }
  return { json: jsonPath, svg: svgPath };
}

export function mkTemp(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function progress(startMs: number, text: string): void {
  process.stderr.write(`[${((Date.now() - startMs) / 1000).toFixed(1).padStart(5)}s] ${text}\n`);
}
