// The `relay` command line as a user meets it: help, exit codes, verify, and the demo.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ENGINE_THREADS_MAX } from '../../src/engine/substrate/engine.js';
import { RELAY_CLI, RelayProcess, runRelay, runRelayToEnd, tempDir, writeDeployment } from './harness.js';

describe('relay CLI', () => {
  it('prints help with exit 0, and usage errors with exit 2', async () => {
    const help = await runRelayToEnd(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /relay white\s+--config/);
    const whiteHelp = await runRelayToEnd(['white', '--help']);
    assert.equal(whiteHelp.code, 0);
    assert.match(whiteHelp.stdout, /public_port/);
    const none = await runRelayToEnd([]);
    assert.equal(none.code, 2);
    const unknown = await runRelayToEnd(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /RELAY_ERR_USAGE: unknown command "frobnicate"/);
    const missing = await runRelayToEnd(['white']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /needs --config FILE/);
    const badFlag = await runRelayToEnd(['gray', '--colour', 'red']);
    assert.equal(badFlag.code, 2);
  });

  it('a gray answers SIGHUP by reloading its file (during startup, with a warning) and keeps running; SIGTERM then stops it with exit 0', async () => {
    const dir = await tempDir();
    try {
      const d = await writeDeployment(dir.path, { targetPort: 9 });
      // No white is running: the gray keeps trying, which is all this needs.
      const gray = runRelay(['gray', '--config', d.grayPath]);
      await gray.waitForMsg('data plane');
      const answered = (l: { msg?: unknown }): boolean => l.msg === 'config reloaded' || l.msg === 'SIGHUP during startup ignored';
      gray.child.kill('SIGHUP');
      let answer = await gray.waitFor(answered, 'the SIGHUP answer');
      if (answer.msg !== 'config reloaded') {
        assert.equal(answer.level, 40);
        gray.child.kill('SIGHUP');
        answer = await gray.waitFor((l) => l.msg === 'config reloaded', 'the reload on SIGHUP');
      }
      assert.equal(answer.why, 'SIGHUP');
      assert.equal(gray.child.exitCode, null, 'still running after SIGHUP');
      assert.equal(gray.child.signalCode, null);
      const exited = new Promise<number | null>((done) => gray.child.once('exit', (code) => done(code)));
      gray.child.kill('SIGTERM');
      assert.equal(await exited, 0, gray.tail());
    } finally {
      await dir.cleanup();
    }
  });

  it('runs one engine thread per core when neither the file nor RELAY_ENGINE_THREADS says, and what the file says otherwise', async (t) => {
    const dir = await tempDir();
    try {
      const d = await writeDeployment(dir.path, { targetPort: 9 });
      // RELAY_ENGINE_THREADS: '' leaves it to the file, which has no engine.threads.
      const gray = runRelay(['gray', '--config', d.grayPath], { RELAY_ENGINE_THREADS: '' });
      const line = await gray.waitForMsg('data plane');
      await gray.kill();
      if (line.dataPlane !== 'splice') return t.skip(`no engine: ${String(line.dataPlane)}`);
      assert.equal(line.threads, Math.min(availableParallelism(), ENGINE_THREADS_MAX));
      const d3 = await writeDeployment(dir.path, { targetPort: 9, threads: 3 });
      const three = runRelay(['gray', '--config', d3.grayPath], { RELAY_ENGINE_THREADS: '' });
      assert.equal((await three.waitForMsg('data plane')).threads, 3);
      await three.kill();
      // RELAY_ENGINE_THREADS wins over the file.
      const five = runRelay(['gray', '--config', d3.grayPath], { RELAY_ENGINE_THREADS: '5' });
      assert.equal((await five.waitForMsg('data plane')).threads, 5);
      await five.kill();
    } finally {
      await dir.cleanup();
    }
  });

  it('exits 2 with a clear message for a missing or invalid config, before listening on anything', async () => {
    const dir = await tempDir();
    try {
      const missing = await runRelayToEnd(['white', '--config', join(dir.path, 'nope.yaml')]);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /RELAY_ERR_CONFIG_READ/);
      const bad = join(dir.path, 'bad.yaml');
      await writeFile(bad, 'control: { listen: "127.0.0.1:7000" }\ngrays:\n  - id: a\n    secret: "c2hvcnQ"\n    public_port: 70000\n    data_port: 20001\n');
      const invalid = await runRelayToEnd(['white', '--config', bad]);
      assert.equal(invalid.code, 2);
      assert.match(invalid.stderr, /grays\[0\]\.public_port/);
      assert.match(invalid.stderr, /grays\[0\]\.secret/);
      const verify = await runRelayToEnd(['verify', '--config', bad]);
      assert.equal(verify.code, 2);
      assert.match(verify.stderr, /grays\[0\]\.public_port/);
    } finally {
      await dir.cleanup();
    }
  });

  it('exits 2 when RELAY_DATA_PLANE names no data plane, before listening on anything', async () => {
    const dir = await tempDir();
    try {
      const d = await writeDeployment(dir.path, { targetPort: 9 });
      const white = await runRelayToEnd(['white', '--config', d.whitePath], { RELAY_DATA_PLANE: 'fast' });
      assert.equal(white.code, 2);
      assert.match(white.stderr, /RELAY_DATA_PLANE=fast: expected auto, splice or js/);
      const gray = await runRelayToEnd(['gray', '--config', d.grayPath], { RELAY_DATA_PLANE: 'fast' });
      assert.equal(gray.code, 2);
    } finally {
      await dir.cleanup();
    }
  });

  it('verify accepts the shipped examples as they are, from a clean environment', async () => {
    const { stat } = await import('node:fs/promises');
    // As a user runs it: from the repository, no variables set, nothing copied or created.
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RELAY_'))) as NodeJS.ProcessEnv;
    for (const [name, kind] of [
      ['examples/white.yaml', 'white'],
      ['examples/gray.yaml', 'gray'],
    ] as const) {
      const run = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [RELAY_CLI, 'verify', '--config', name], { stdio: ['ignore', 'pipe', 'pipe'], env: clean });
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
        child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
        child.once('exit', (code) => resolve({ code, stdout, stderr }));
      });
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout, `${name}: valid ${kind} config\n`);
      // The examples hold example secrets inline: the checkout's mode decides whether relay warns.
      const readable = ((await stat(name)).mode & 0o044) !== 0;
      assert.equal(/holds inline secrets/.test(run.stderr), readable, run.stderr);
      assert.equal(run.stderr.split('\n').filter((l) => l !== '' && !/holds inline secrets/.test(l)).length, 0, run.stderr);
    }
  });

  it('the console\'s /quit stops the white cleanly (exit 0, "stopping" logged)', async () => {
    const dir = await tempDir();
    try {
      const d = await writeDeployment(dir.path, { targetPort: 9 });
      const child = spawn(process.execPath, [RELAY_CLI, 'white', '--config', d.whitePath, '--console'], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, RELAY_LOG_LEVEL: 'info' },
      });
      const white = new RelayProcess(child);
      await white.waitForMsg('admin listening');
      child.stdin!.write('/quit\n');
      await white.waitForMsg('stopping');
      const { code } = await white.exited;
      assert.equal(code, 0, white.tail());
    } finally {
      await dir.cleanup();
    }
  });

  it('the demo starts, answers through the tunnel, and stops cleanly on SIGINT', async () => {
    const demo = runRelay(['demo']);
    const line = await demo.waitFor((l) => typeof l.msg === 'string' && /curl http:\/\/127\.0\.0\.1:\d+/.test(l.msg), 'the curl line');
    const port = Number(/127\.0\.0\.1:(\d+)/.exec(String(line.msg))![1]);
    const body = await new Promise<string>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path: '/hello' }, (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (t: string) => (text += t));
          res.on('end', () => resolve(text));
        })
        .on('error', reject);
    });
    assert.match(body, /hello from the service behind the gray: you asked for GET \/hello/);
    demo.child.kill('SIGINT');
    assert.equal((await demo.exited).code, 0);
  });
});
