// The systemd units under deploy/systemd/ pass `systemd-analyze verify` (Debian's systemd), carry
// the restart policy and sandbox docs/deploy.md promises, and start commands the package has:
// the binary is one of package.json's bins and relay accepts the exact arguments (parsed
// strictly, so a misspelt flag fails).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const unitDir = join(root, 'deploy', 'systemd');
const units = readdirSync(unitDir).filter((f) => f.endsWith('.service'));
const bins = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin;
const work = mkdtempSync(join(tmpdir(), 'relay-units-'));

function directives(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

/** The unit with its installed binary path pointed at this checkout's, so verify finds it. */
function localCopy(name: string, text: string): string {
  const path = join(work, name);
  writeFileSync(path, text.replace(/^(ExecStart=)(\S+)/m, (_, key: string, bin: string) => `${key}${join(root, 'bin', basename(bin))}`));
  return path;
}

function verify(paths: string[]): { status: number | null; stderr: string } {
  const run = spawnSync('systemd-analyze', ['verify', ...paths], { encoding: 'utf8' });
  assert.equal(run.error, undefined, 'systemd-analyze is installed (Debian: apt-get install systemd)');
  return { status: run.status, stderr: run.stderr.trim() };
}

describe('systemd units', () => {
  after(() => rmSync(work, { recursive: true, force: true }));

  it('ship a white unit and a gray template', () => {
    assert.deepEqual(units.sort(), ['relay-gray@.service', 'relay-white.service']);
  });

  for (const unit of units) {
    it(`${unit}: systemd-analyze verify is clean`, () => {
      const copy = localCopy(unit, readFileSync(join(unitDir, unit), 'utf8'));
      // A template is verified through an instance of it, as systemctl would start it.
      const target = unit.endsWith('@.service') ? join(work, unit.replace('@.service', '@office-nas.service')) : copy;
      const result = verify([target]);
      assert.equal(result.status, 0, result.stderr);
      assert.equal(result.stderr, '', 'no warnings');
    });

    it(`${unit}: restart policy and sandbox`, () => {
      const d = directives(readFileSync(join(unitDir, unit), 'utf8'));
      const one = (key: string): string | undefined => d.get(key)?.at(-1);
      assert.equal(one('Restart'), 'on-failure');
      assert.equal(one('RestartPreventExitStatus'), '2', 'config errors (exit 2) are not restarted');
      assert.match(one('LimitNOFILE') ?? '', /^\d+$/);
      for (const key of ['NoNewPrivileges', 'ProtectHome', 'PrivateTmp']) assert.equal(one(key), 'yes', key);
      assert.equal(one('ProtectSystem'), 'strict');
      assert.ok(one('User') || one('DynamicUser') === 'yes', 'not root');
      assert.equal(d.has('MemoryDenyWriteExecute'), false, "V8's JIT cannot run under MemoryDenyWriteExecute");
      assert.match(one('ExecReload') ?? '', /kill -HUP \$MAINPID/, 'both reload their file on SIGHUP');
      if (unit === 'relay-white.service') {
        assert.ok(d.get('ReadWritePaths')?.includes('/run/relay'), 'the admin socket directory is writable');
      }
    });

    it(`${unit}: ExecStart runs a command the package has, with arguments relay accepts`, () => {
      const exec = directives(readFileSync(join(unitDir, unit), 'utf8')).get('ExecStart')?.[0] ?? '';
      const [bin, ...args] = exec.replace(/%i/g, 'office-nas').split(/\s+/);
      assert.ok(bin && bin.startsWith('/'), 'an absolute path');
      const name = basename(bin);
      assert.ok(name in bins, `${name} is one of package.json's bins`);
      // --help after the real arguments: parsed strictly (unknown flags fail with exit 2), then usage.
      const run = spawnSync(process.execPath, [join(root, bins[name]!), ...args, '--help'], { encoding: 'utf8' });
      assert.equal(run.status, 0, `${exec} --help: ${run.stderr}`);
      assert.match(run.stdout, new RegExp(`relay ${args[0]}`));
    });
  }

  it('verify itself reports a misspelt key and a missing binary (the checks above can fail)', () => {
    const text = readFileSync(join(unitDir, 'relay-white.service'), 'utf8');
    const typo = verify([localCopy('typo.service', text.replace('ProtectHome=yes', 'ProtectHom=yes'))]);
    assert.match(typo.stderr, /Unknown key 'ProtectHom'/);
    const missing = join(work, 'missing.service');
    writeFileSync(missing, text.replace(/^ExecStart=\S+/m, 'ExecStart=/nonexistent/relay'));
    assert.notEqual(verify([missing]).status, 0);
  });
});
