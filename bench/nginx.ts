// nginx as the service of the wrk workload: a child of the harness with its own config in the
// run's temp dir, serving a small fixed body on 127.0.0.1, stopped by its PID. A second listener
// serves stub_status, so the harness can count the TCP connections nginx accepted and the
// requests it answered around each measurement: that is how the bench knows every request came
// on a new connection.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { HOST, freePorts, sleep } from './common.js';
import { type Managed, lastLines, spawnManaged } from './proc.js';

/** What nginx answers on every path: small, so the service costs little. */
export const NGINX_BODY = 'relay bench: a small static body served by nginx\n';

export interface NginxCounts {
  accepts: number;
  requests: number;
}

export interface Nginx {
  port: number;
  pid: number;
  version: string;
  config: string;
  /** Connections accepted and requests answered since start, read from stub_status (costs 1 of each). */
  counts: () => Promise<NginxCounts>;
  health: () => string | null;
  stop: () => Promise<void>;
}

export function nginxVersion(bin: string): string | null {
  const r = spawnSync(bin, ['-v'], { encoding: 'utf8', timeout: 5000 });
  const line = `${r.stderr ?? ''}${r.stdout ?? ''}`.split('\n')[0]?.trim() ?? '';
  return r.error || !/nginx/i.test(line) ? null : line;
}

/**
 * The whole config. Choices, and why:
 *  - daemon off and master_process off: the process the harness spawns is the one serving, so it
 *    is the one sampled and the one stopped by PID (no master/worker pair, no worker to find).
 *  - worker_processes 1 (the same with the master off): one process, as the Node service is one.
 *  - every path nginx writes (pid, error log, temp dirs) under the run's temp dir, so it needs no
 *    system directory and leaves nothing behind; no access log (it would cost CPU per request).
 *  - `return 200` with a fixed body: no file to open per request.
 */
export function nginxConfig(o: { dir: string; port: number; statusPort: number }): string {
  const p = (name: string): string => path.join(o.dir, name);
  return `# nginx for the bench's wrk workload (generated; do not edit)
daemon off;
master_process off;
worker_processes 1;
pid ${p('nginx.pid')};
error_log ${p('error.log')} warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path ${p('client_body')};
    proxy_temp_path ${p('proxy')};
    fastcgi_temp_path ${p('fastcgi')};
    uwsgi_temp_path ${p('uwsgi')};
    scgi_temp_path ${p('scgi')};

    server {
        listen ${HOST}:${o.port} backlog=4096;
        location / {
            default_type text/plain;
            return 200 ${JSON.stringify(NGINX_BODY)};
        }
    }

    server {
        listen ${HOST}:${o.statusPort};
        location = /status {
            stub_status;
        }
    }
}
`;
}

/** One GET over a new connection; resolves with status and body. */
export function httpGet(port: number, urlPath: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: HOST, port, path: urlPath, agent: false, headers: { Connection: 'close' }, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        if (body.length < 64 * 1024) body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** Retry a GET of / until nginx's body comes back through `port` or the deadline passes. */
export async function waitHttp(port: number, deadlineMs: number): Promise<void> {
  let last = 'no attempt';
  while (Date.now() < deadlineMs) {
    try {
      const r = await httpGet(port, '/', Math.max(200, Math.min(2000, deadlineMs - Date.now())));
      if (r.status === 200 && r.body === NGINX_BODY) return;
      last = `HTTP ${r.status}, body ${JSON.stringify(r.body.slice(0, 80))}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`nginx's page did not come back: ${last}`);
}

export function parseStubStatus(text: string): NginxCounts | null {
  // "server accepts handled requests\n 16 16 31 \n"
  const m = text.match(/accepts\s+handled\s+requests\s+(\d+)\s+(\d+)\s+(\d+)/);
  return m ? { accepts: Number(m[1]), requests: Number(m[3]) } : null;
}

export async function startNginx(o: { bin: string; dir: string; readyTimeoutMs: number }): Promise<{ ok: true; nginx: Nginx } | { ok: false; reason: string }> {
  const version = nginxVersion(o.bin);
  if (version === null) return { ok: false, reason: `${o.bin} -v did not say nginx` };
  const [port, statusPort] = await freePorts(2);
  if (port === undefined || statusPort === undefined) return { ok: false, reason: 'no free ports' };
  fs.mkdirSync(o.dir, { recursive: true });
  const config = path.join(o.dir, 'nginx.conf');
  fs.writeFileSync(config, nginxConfig({ dir: o.dir, port, statusPort }));
  const errorLog = path.join(o.dir, 'error.log');
  // -p: relative paths resolve in the temp dir; -e: the log of startup, before the config is read.
  const proc: Managed = spawnManaged('nginx', o.bin, ['-p', o.dir + path.sep, '-c', config, '-e', errorLog]);
  const logTail = (): string => {
    try {
      return lastLines(fs.readFileSync(errorLog, 'utf8').split('\n').filter(Boolean), 3);
    } catch {
      return '';
    }
  };
  try {
    await Promise.race([
      waitHttp(port, Date.now() + o.readyTimeoutMs),
      proc.exited.then((how) => Promise.reject(new Error(`nginx ${how}${lastLines(proc.tail, 3)}${logTail()}`))),
    ]);
  } catch (e) {
    await proc.stop();
    return { ok: false, reason: `nginx did not come up: ${(e as Error).message}` };
  }
  let dead: string | null = null;
  void proc.exited.then((how) => (dead = `nginx ${how}${logTail()}`));
  return {
    ok: true,
    nginx: {
      port,
      pid: proc.pid,
      version,
      config,
      counts: async () => {
        const r = await httpGet(statusPort, '/status', 5000);
        const c = r.status === 200 ? parseStubStatus(r.body) : null;
        if (c === null) throw new Error(`nginx stub_status: HTTP ${r.status} ${JSON.stringify(r.body.slice(0, 200))}`);
        return c;
      },
      health: () => dead,
      stop: () => proc.stop(),
    },
  };
}
