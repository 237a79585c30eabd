// Errors that must say what happened: two real agents with one id, a gray with a wrong secret
// behind the same address as a good one, an ordinary disconnect, a service the gray cannot reach
// for want of descriptors, and IPv6 addresses in logs.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { formatHostPort } from '../../src/config/address.js';
import { ErrorCodes, type RelayError } from '../../src/errors.js';
import { GrayAgent } from '../../src/engine/gray/agent.js';
import { warnTargetFailed } from '../../src/engine/gray/forwarder.js';
import type { ClientAddressInfo } from '../../src/engine/protocol/start-header.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import { RateLimitedLog } from '../../src/rate-limited-log.js';
import { grayConfigFor, startService, whiteConfigFor } from '../helpers/tunnel.js';
import { captureLogger } from '../soak/support.js';
import { testDataPlane } from '../helpers/data-plane.js';

const SECRET = randomBytes(32);

describe('errors that say what happened', () => {
  it('two agents with one id: both sides name the other agent, and the replaced one backs off instead of flapping', { timeout: 30_000 }, async () => {
    const service = await startService();
    const whiteLog = captureLogger();
    const white = new WhiteServer(whiteConfigFor([{ id: 'twin', secret: SECRET, publicPort: 0, dataPort: 0 }]), { dataPlane: testDataPlane(), logger: whiteLog.logger });
    await white.start();
    // reconnect_max_ms 1000: a replaced agent waits at least half of it; any other end of a
    // session is retried within reconnect_base_ms (50).
    const limits = { reconnectBaseMs: 50, reconnectMaxMs: 1000 };
    const logA = captureLogger();
    const a = new GrayAgent(grayConfigFor('twin', SECRET, white.controlPort, service.port, { pool: 1 }, limits), logA.logger, { dataPlane: testDataPlane() });
    const b = new GrayAgent(grayConfigFor('twin', SECRET, white.controlPort, service.port, { pool: 1 }, limits), captureLogger().logger, { dataPlane: testDataPlane() });
    const replaced: Array<{ who: string; at: number }> = [];
    const onReplaced = (who: string) => (reason: RelayError) => {
      if (reason.code === ErrorCodes.SESSION_REPLACED) replaced.push({ who, at: Date.now() });
    };
    a.on('disconnected', onReplaced('a'));
    b.on('disconnected', onReplaced('b'));
    try {
      const aUp = new Promise<void>((r) => a.once('connected', () => r()));
      a.start();
      await aUp;
      const aReplaced = new Promise<number>((r) => a.once('disconnected', () => r(Date.now())));
      b.start();
      const replacedAt = await aReplaced;
      const line = await logA.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('another agent logged in as twin from 127.0.0.1:'), 'the replaced agent\'s line');
      assert.equal(line.code, ErrorCodes.SESSION_REPLACED);
      assert.ok(Number(line.retryInMs) >= 500, `waits ${String(line.retryInMs)} ms`);
      const whiteLine = await whiteLog.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('another agent logged in as twin from 127.0.0.1:'), 'the white\'s line');
      assert.match(String(whiteLine.msg), /it replaces the session from 127\.0\.0\.1:\d+$/);

      // A comes back no sooner than its wait, and takes the session from B once, not many times.
      await new Promise<void>((r) => a.once('connected', () => r()));
      const back = Date.now() - replacedAt;
      assert.ok(back >= 500 - 5, `came back after ${back} ms`);
      assert.equal(replaced.length <= 2, true, `${replaced.length} replacements in ${back} ms`);
    } finally {
      await a.stop(0);
      await b.stop(0);
      await white.stop(0);
      service.server.close();
    }
  });

  it('a gray with a wrong secret does not lock out another gray from the same address; its own logins are penalized', { timeout: 30_000 }, async () => {
    const service = await startService();
    const whiteLog = captureLogger();
    const goodSecret = randomBytes(32);
    // A penalty far longer than the test: a lock-out of the address would show as a timeout.
    const white = new WhiteServer(
      whiteConfigFor(
        [
          { id: 'bad', secret: SECRET, publicPort: 0, dataPort: 0 },
          { id: 'good', secret: goodSecret, publicPort: 0, dataPort: 0 },
        ],
        { authFailurePenaltyBaseMs: 60_000, authFailurePenaltyMaxMs: 60_000 },
      ),
      { dataPlane: testDataPlane(), logger: whiteLog.logger },
    );
    await white.start();
    const badLog = captureLogger();
    const bad = new GrayAgent(grayConfigFor('bad', randomBytes(32), white.controlPort, service.port, { pool: 1 }), badLog.logger, { dataPlane: testDataPlane() });
    const good = new GrayAgent(grayConfigFor('good', goodSecret, white.controlPort, service.port, { pool: 1 }), captureLogger().logger, { dataPlane: testDataPlane() });
    try {
      bad.start();
      const failed = await badLog.waitFor((l) => l.code === ErrorCodes.WHITE_PROOF_INVALID, 'the bad gray\'s failure');
      assert.match(String(failed.reason), /wrong secret, or the id is not known to the white yet, or a man in the middle/);
      await whiteLog.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('gray authentication failed') && l.gray === 'bad' && l.known === true, 'the failure on the white');
      // Its next try is refused at HELLO under the penalty.
      await badLog.waitFor((l) => l.code === ErrorCodes.AUTH_FAILED && /refused for \d+ ms more/.test(String(l.reason)), 'the penalty on the bad gray');

      const ready = new Promise<void>((r) => good.once('pool-ready', () => r()));
      good.start();
      await ready;
      assert.equal(white.snapshot().grays.find((g) => g.id === 'good')!.connected, true);
    } finally {
      await bad.stop(0);
      await good.stop(0);
      await white.stop(0);
      service.server.close();
    }
  });

  it('a gray that stops is logged on the white as a lost connection, not an internal error', { timeout: 20_000 }, async () => {
    const service = await startService();
    const whiteLog = captureLogger();
    const white = new WhiteServer(whiteConfigFor([{ id: 'g', secret: SECRET, publicPort: 0, dataPort: 0 }]), { dataPlane: testDataPlane(), logger: whiteLog.logger });
    await white.start();
    const gray = new GrayAgent(grayConfigFor('g', SECRET, white.controlPort, service.port, { pool: 1 }), captureLogger().logger, { dataPlane: testDataPlane() });
    try {
      const ready = new Promise<void>((r) => gray.once('pool-ready', () => r()));
      gray.start();
      await ready;
      // The process is gone without a word: its control socket simply closes.
      (gray as unknown as { channel: { socket: { destroy(): void } } }).channel.socket.destroy();
      const line = await whiteLog.waitFor((l) => l.msg === 'gray disconnected', 'the disconnect line');
      assert.equal(line.code, ErrorCodes.CONNECTION_LOST);
      assert.equal(whiteLog.lines.filter((l) => l.code === ErrorCodes.INTERNAL).length, 0);
    } finally {
      await gray.stop(0);
      await white.stop(0);
      service.server.close();
    }
  });

  it('EMFILE reaching the service is logged as out of descriptors, not as the service unreachable; IPv6 addresses are bracketed', async () => {
    const log = captureLogger();
    const warnings = new RateLimitedLog(log.logger, 0);
    const client: ClientAddressInfo = { family: 6, srcAddress: '2001:db8::7', srcPort: 40000, dstAddress: '::1', dstPort: 20000 };
    warnTargetFailed(warnings, { host: '::1', port: 18082 }, client, Object.assign(new Error('connect EMFILE ::1:18082'), { code: 'EMFILE' }));
    warnTargetFailed(warnings, { host: '::1', port: 18082 }, client, Object.assign(new Error('connect ECONNREFUSED ::1:18082'), { code: 'ECONNREFUSED' }));
    const [fds, refused] = log.lines;
    assert.equal(fds!.code, ErrorCodes.TOO_MANY_OPEN_FILES);
    assert.match(String(fds!.msg), /out of file descriptors \(EMFILE\)/);
    assert.equal(fds!.target, '[::1]:18082');
    assert.equal(fds!.client, '[2001:db8::7]:40000');
    assert.equal(refused!.code, ErrorCodes.TARGET_UNREACHABLE);
    assert.equal(refused!.msg, 'local service unreachable');
    assert.equal(formatHostPort({ host: '::1', port: 18082 }), '[::1]:18082');
  });

  it('EADDRNOTAVAIL reaching the service is logged as out of local ports, with the host\'s range and what lifts it', async () => {
    const log = captureLogger();
    const warnings = new RateLimitedLog(log.logger, 0);
    const client: ClientAddressInfo = { family: 4, srcAddress: '192.0.2.7', srcPort: 40000, dstAddress: '10.0.0.2', dstPort: 20000 };
    warnTargetFailed(warnings, { host: '10.0.0.9', port: 8080 }, client, Object.assign(new Error('connect EADDRNOTAVAIL 10.0.0.9:8080'), { code: 'EADDRNOTAVAIL' }));
    const [line] = log.lines;
    assert.equal(line!.code, ErrorCodes.LOCAL_PORTS_EXHAUSTED);
    assert.equal(line!.msg, 'no local port left for connections to the service');
    assert.equal(line!.target, '10.0.0.9:8080');
    const range = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().replace(/\s+/g, '-');
    const reuse = readFileSync('/proc/sys/net/ipv4/tcp_tw_reuse', 'utf8').trim();
    assert.equal(line!.portRange, range);
    assert.equal(line!.twReuse, reuse);
    const detail = String(line!.detail);
    assert.match(detail, new RegExp(`ephemeral ports \\(${range}\\) is in use or in TIME_WAIT toward 10\\.0\\.0\\.9:8080`));
    if (reuse === '1') assert.match(detail, /tcp_tw_reuse is 1 already.*widen net\.ipv4\.ip_local_port_range/);
    else assert.match(detail, new RegExp(`a connection to the service whose client closed first .* toward one service address; set net\\.ipv4\\.tcp_tw_reuse=1 \\(it is ${reuse};`));
  });
});
