// How the bench finds the tools of the wrk workload and installs the missing ones: with a PATH
// made for each test, holding fake apt-get scripts that record their arguments, so every branch
// (found, explicit path missing, no apt-get, apt-get failing, apt-get installing) runs without
// touching the machine's packages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findOrInstall, findTool } from '../../bench/apt.js';

function withPath(fn: (bin: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-bench-apt-'));
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  const saved = process.env.PATH;
  // Only the test's directory: the real wrk, nginx and apt-get must not be found (the fake
  // scripts use shell builtins and absolute paths).
  process.env.PATH = bin;
  try {
    fn(bin);
  } finally {
    process.env.PATH = saved;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function script(file: string, body: string): void {
  fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
}

test('a tool on PATH is found and nothing is installed', () => {
  withPath((bin) => {
    script(path.join(bin, 'wrk'), 'exit 0');
    script(path.join(bin, 'apt-get'), `echo "$@" >> ${bin}/apt.log; exit 1`);
    const r = findOrInstall([{ bin: 'wrk', pkg: 'wrk' }], () => {});
    assert.deepEqual(r, { ok: true, paths: [path.join(bin, 'wrk')], installed: [] });
    assert.equal(fs.existsSync(path.join(bin, 'apt.log')), false, 'apt-get must not run');
  });
});

test('a tool named by a path that does not exist is reported, never installed', () => {
  withPath((bin) => {
    script(path.join(bin, 'apt-get'), `echo "$@" >> ${bin}/apt.log; exit 0`);
    const r = findOrInstall([{ bin: '/nonexistent/wrk', pkg: 'wrk' }], () => {});
    assert.deepEqual(r, { ok: false, reason: 'not found: /nonexistent/wrk' });
    assert.equal(fs.existsSync(path.join(bin, 'apt.log')), false, 'apt-get must not run');
  });
});

test('a missing tool without apt-get: the reason says how to install it', () => {
  withPath(() => {
    const r = findOrInstall([{ bin: 'wrk-missing-here', pkg: 'wrk' }, { bin: 'nginx-missing-here', pkg: 'nginx-light' }], () => {});
    assert.equal(r.ok, false);
    assert.match(!r.ok ? r.reason : '', /wrk-missing-here and nginx-missing-here not found and apt-get is not available; install them with: apt-get update && apt-get install -y wrk nginx-light/);
  });
});

test('apt-get failing: the reason carries its last words and the manual command', () => {
  withPath((bin) => {
    script(path.join(bin, 'apt-get'), `echo "$@" >> ${bin}/apt.log; echo "E: Could not open lock file /var/lib/apt/lists/lock - open (13: Permission denied)" >&2; exit 100`);
    const lines: string[] = [];
    const r = findOrInstall([{ bin: 'wrk', pkg: 'wrk' }], (l) => lines.push(l));
    assert.equal(r.ok, false);
    const reason = !r.ok ? r.reason : '';
    assert.match(reason, /^wrk not found, and apt-get update failed \(exit status 100: E: Could not open lock file .*Permission denied\)\); install them with: apt-get update && apt-get install -y wrk$/);
    // It stopped at the failed update.
    assert.equal(fs.readFileSync(path.join(bin, 'apt.log'), 'utf8').trim().split('\n').length, 1);
    assert.match(lines[0] ?? '', /installing wrk/);
  });
});

test('apt-get installing: update once, then install the packages of the missing tools only', () => {
  withPath((bin) => {
    script(path.join(bin, 'nginx'), 'exit 0');
    // "Installs" wrk into a directory that is not on PATH but is searched (as /usr/sbin for nginx).
    const sbin = path.join(path.dirname(bin), 'sbin');
    fs.mkdirSync(sbin);
    script(path.join(bin, 'apt-get'), `echo "$@" >> ${bin}/apt.log\ncase "$*" in *install*) printf '#!/bin/sh\\n' > ${sbin}/wrk; /bin/chmod 755 ${sbin}/wrk;; esac\nexit 0`);
    const r = findOrInstall(
      [
        { bin: 'wrk', pkg: 'wrk', extraDirs: [sbin] },
        { bin: 'nginx', pkg: 'nginx-light' },
      ],
      () => {},
    );
    assert.deepEqual(r, { ok: true, paths: [path.join(sbin, 'wrk'), path.join(bin, 'nginx')], installed: ['wrk'] });
    const calls = fs.readFileSync(path.join(bin, 'apt.log'), 'utf8').trim().split('\n');
    assert.equal(calls.length, 2);
    assert.match(calls[0]!, /^-qq -o DPkg::Lock::Timeout=\d+ update$/);
    assert.match(calls[1]!, /^-y -qq -o DPkg::Lock::Timeout=\d+ install wrk$/);
    assert.equal(findTool({ bin: 'wrk', pkg: 'wrk', extraDirs: [sbin] }), path.join(sbin, 'wrk'));
  });
});
