// Health and metrics as an operator's monitoring sees them, on real processes: the white's
// /healthz and /metrics on its metrics listener, the gray's status listener (/healthz, /readyz
// while offline and once its pool is up, /metrics with its session, pool, forwards, bytes and
// service connect failures). Every scrape goes through the strict exposition parser.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { describe, it } from 'node:test';
import { parsePrometheusText, sampleValue, type Family } from '../helpers/prometheus-text.js';
import { freePort, runRelay, tempDir, writeDeployment } from './harness.js';

function get(port: number, path: string): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (t: string) => (body += t));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }));
      })
      .on('error', reject);
  });
}

async function metrics(port: number): Promise<Map<string, Family>> {
  const res = await get(port, '/metrics');
  assert.equal(res.status, 200);
  assert.equal(res.type, 'text/plain; version=0.0.4; charset=utf-8');
  return parsePrometheusText(res.body);
}

/** Polls a condition (a scrape) every 50 ms until it holds, at most 15 s. */
async function until<T>(probe: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within 15 s (last: ${JSON.stringify(v)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A service that reads what the client sends until its FIN, then answers `reply` bytes. */
function replyingService(reply: number): net.Server {
  return net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('data', () => {});
    s.on('end', () => s.end(Buffer.alloc(reply, 0x61)));
  });
}

/** Sends `bytes` with a FIN and reads the answer to its end. */
function exchange(port: number, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let received = 0;
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => s.end(Buffer.alloc(bytes, 0x62)));
    s.on('data', (d: Buffer) => (received += d.length));
    s.on('end', () => resolve(received));
    s.on('error', reject);
  });
}

describe('health and metrics endpoints', () => {
  it('the gray reports not ready while its white is down, then ready, and counts what it forwards', { timeout: 60_000 }, async () => {
    const dir = await tempDir();
    const service = replyingService(1000);
    await new Promise<void>((r) => service.listen(0, '127.0.0.1', r));
    const servicePort = (service.address() as net.AddressInfo).port;
    const [metricsPort, statusPort] = [await freePort(), await freePort()];
    const d = await writeDeployment(dir.path, { targetPort: servicePort, pool: 3, whiteExtra: `metrics: { listen: "127.0.0.1:${metricsPort}" }`, grayExtra: `status: { listen: "127.0.0.1:${statusPort}" }` });
    const gray = runRelay(['gray', '--config', d.grayPath]);
    let white: ReturnType<typeof runRelay> | null = null;
    try {
      await gray.waitForMsg('status listener');
      assert.deepEqual(await get(statusPort, '/healthz'), { status: 200, body: 'ok\n', type: 'text/plain; charset=utf-8' });
      const offline = await get(statusPort, '/readyz');
      assert.equal(offline.status, 503);
      assert.match(offline.body, new RegExp(`not ready: 127\\.0\\.0\\.1:${d.controlPort}: not connected`));
      const g = { gray: 'e2e', white: `127.0.0.1:${d.controlPort}` };
      const before = await until(() => metrics(statusPort), (m) => (sampleValue(m, 'relay_gray_reconnects_total', g) ?? 0) >= 1, 'a reconnect counted');
      assert.equal(sampleValue(before, 'relay_gray_session_connected', g), 0);
      assert.equal(sampleValue(before, 'relay_gray_pool_target_connections', g), 0);

      white = runRelay(['white', '--config', d.whitePath, '--no-console']);
      await gray.waitForMsg('pool ready');
      assert.deepEqual(await get(statusPort, '/readyz'), { status: 200, body: 'ready\n', type: 'text/plain; charset=utf-8' });
      const up = await metrics(statusPort);
      assert.equal(sampleValue(up, 'relay_gray_session_connected', g), 1);
      assert.equal(sampleValue(up, 'relay_gray_sessions_total', g), 1);
      assert.equal(sampleValue(up, 'relay_gray_pool_target_connections', g), 3);
      assert.equal(sampleValue(up, 'relay_gray_pool_idle_connections', g), 3);
      assert.equal(sampleValue(up, 'relay_build_info', { version: String(up.get('relay_build_info')!.samples[0]!.labels.version), data_plane: String(up.get('relay_build_info')!.samples[0]!.labels.data_plane) }), 1);
      assert.ok((sampleValue(up, 'process_open_fds') ?? 0) > 0);

      assert.equal(await exchange(d.publicPort, 300), 1000);
      const id = { gray: 'e2e' };
      const counted = await until(() => metrics(statusPort), (m) => sampleValue(m, 'relay_gray_forwards_total', id) === 1, 'the forward counted');
      assert.equal(sampleValue(counted, 'relay_gray_service_sent_bytes_total', id), 300);
      assert.equal(sampleValue(counted, 'relay_gray_service_received_bytes_total', id), 1000);
      assert.equal(sampleValue(counted, 'relay_gray_forwards_active', id), 0);
      assert.equal(sampleValue(counted, 'relay_gray_service_connect_failures_total', id), 0);

      // The white's side of the same exchange, and its health.
      assert.deepEqual(await get(metricsPort, '/healthz'), { status: 200, body: 'ok\n', type: 'text/plain; charset=utf-8' });
      const w = await metrics(metricsPort);
      assert.equal(sampleValue(w, 'relay_client_received_bytes_total', id), 300);
      assert.equal(sampleValue(w, 'relay_client_sent_bytes_total', id), 1000);
      assert.equal(sampleValue(w, 'relay_client_wait_seconds', id, 'relay_client_wait_seconds_count'), 1);

      // The service goes away: the next client is reset and the gray counts the failed connect.
      await new Promise<void>((r) => service.close(() => r()));
      await assert.rejects(exchange(d.publicPort, 10), { code: 'ECONNRESET' });
      await until(() => metrics(statusPort), (m) => sampleValue(m, 'relay_gray_service_connect_failures_total', id) === 1, 'the failed connect counted');
      assert.equal((await get(statusPort, '/nope')).status, 404);
    } finally {
      await gray.kill('SIGTERM');
      await white?.kill('SIGTERM');
      if (service.listening) service.close();
      await dir.cleanup();
    }
  });

  it('a gray whose status port is taken exits with a clear error', { timeout: 30_000 }, async () => {
    const dir = await tempDir();
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const d = await writeDeployment(dir.path, { targetPort: 9, grayExtra: `status: { listen: "127.0.0.1:${port}" }` });
      const gray = runRelay(['gray', '--config', d.grayPath]);
      const exited = await gray.exited;
      assert.equal(exited.code, 1);
      assert.match(gray.stderr.join(''), new RegExp(`status listener 127\\.0\\.0\\.1:${port}: cannot listen \\(EADDRINUSE\\)`));
    } finally {
      taken.close();
      await dir.cleanup();
    }
  });
});
