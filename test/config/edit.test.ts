// relayctl's file edits: comments and layout kept, ports allocated, full validation before the
// write, atomic replace keeping the mode, and no lost edits under concurrency (same process,
// other processes, and a writer that ignores the lock).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, lstat, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, RelayError } from '../../src/errors.js';
import { addGray, deleteGray, layoutOf, renderGrayConfig } from '../../src/config/edit.js';
import { loadWhiteConfig, parseGrayConfig } from '../../src/config/load.js';
import { generateSecret } from '../../src/config/secret.js';

const S1 = generateSecret();

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'relay-edit-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function rejects(promise: Promise<unknown>, code: string): Promise<RelayError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof RelayError, String(err));
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

const BASE = `# The registry of grays. Reviewed in PRs.
control:
  listen: "0.0.0.0:7000"   # shared TLS port

ports:
  range: "7000-7010"

metrics:
  listen: "127.0.0.1:7002"

grays:
  # the office NAS, owned by Ana
  - id: office-nas
    secret: "${S1}"
    public_port: 7001
    data_port: 7003 # data

# trailing comment
`;

/** True when `lines` appear in `text` in this order (other lines may be between them). */
function containsInOrder(text: string, lines: string[]): boolean {
  const have = text.split('\n');
  let i = 0;
  for (const line of have) if (i < lines.length && line === lines[i]) i++;
  return i === lines.length;
}

test('addGray keeps comments and layout, allocates free ports, writes a loadable file', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, BASE);
  await chmod(file, 0o640);
  const { entry } = await addGray(file, { id: 'lab-camera' });
  // 7000 control, 7001 and 7003 office-nas, 7002 metrics: the lowest free are 7004 and 7005.
  assert.deepEqual({ ...entry, secret: undefined }, { id: 'lab-camera', publicPort: 7004, dataPort: 7005, secret: undefined });
  assert.match(entry.secret, /^[A-Za-z0-9_-]{43}$/);

  const text = await readFile(file, 'utf8');
  assert.ok(text.includes('  # the office NAS, owned by Ana\n'), 'a comment line survives');
  assert.ok(text.includes('# trailing comment'));
  const kept = BASE.split('\n').filter((l) => l !== '' && !l.includes('shared TLS port') && !l.includes('# data'));
  assert.ok(containsInOrder(text, kept), `original lines kept in order:\n${text}`);
  assert.ok(text.includes(`  - id: lab-camera\n    secret: "${entry.secret}"\n    public_port: 7004\n    data_port: 7005\n`), text);

  const c = await loadWhiteConfig(file);
  const added = c.grays.find((g) => g.id === 'lab-camera')!;
  assert.ok(added.secret.equals(Buffer.from(entry.secret, 'base64url')));
  assert.equal((await stat(file)).mode & 0o777, 0o640, 'the file mode is kept');
  const leftovers = (await readdir(dir)).filter((n) => n !== 'relay.yaml');
  assert.deepEqual(leftovers, [], 'no temp or lock files left behind');
});

test('addGray with given ports, or one given and one allocated', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, BASE);
  const a = await addGray(file, { id: 'a', publicPort: 30000, dataPort: 30001 });
  assert.deepEqual([a.entry.publicPort, a.entry.dataPort], [30000, 30001]);
  const b = await addGray(file, { id: 'b', publicPort: 7004 });
  assert.deepEqual([b.entry.publicPort, b.entry.dataPort], [7004, 7005]);
  const ids = (await loadWhiteConfig(file)).grays.map((g) => g.id);
  assert.deepEqual(ids, ['office-nas', 'a', 'b']);
});

test('addGray refuses a result that would not load, and leaves the file alone', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, BASE);
  const err = await rejects(addGray(file, { id: 'x', publicPort: 7000, dataPort: 7009 }), ErrorCodes.CONFIG_CONFLICT);
  assert.match(err.message, /grays\[1\]\.public_port: 7000 is already the control port \(control\.listen\)/);
  await rejects(addGray(file, { id: 'bad id' }), ErrorCodes.CONFIG_INVALID);
  await rejects(addGray(file, { id: 'office-nas' }), ErrorCodes.GRAY_EXISTS);
  assert.equal(await readFile(file, 'utf8'), BASE);
});

test('addGray: PORTS_EXHAUSTED when the range is used up; CONFIG_INVALID without a range', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, BASE.replace('7000-7010', '7000-7005'));
  await addGray(file, { id: 'a' }); // 7004, 7005
  const err = await rejects(addGray(file, { id: 'b' }), ErrorCodes.PORTS_EXHAUSTED);
  assert.match(err.message, /ports\.range 7000-7005: no free port left, 2 needed/);

  await writeFile(file, BASE.replace('ports:\n  range: "7000-7010"\n', ''));
  const e2 = await rejects(addGray(file, { id: 'b' }), ErrorCodes.CONFIG_INVALID);
  assert.match(e2.message, /ports\.range is not set/);
});

test('deleteGray removes the entry (and only it); GRAY_UNKNOWN for an unknown id', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, BASE);
  await addGray(file, { id: 'a' });
  await addGray(file, { id: 'b' });
  const { removed } = await deleteGray(file, 'a');
  assert.deepEqual(removed, { id: 'a', publicPort: 7004, dataPort: 7005 });
  assert.deepEqual((await loadWhiteConfig(file)).grays.map((g) => g.id), ['office-nas', 'b']);
  await rejects(deleteGray(file, 'a'), ErrorCodes.GRAY_UNKNOWN);
  await deleteGray(file, 'office-nas');
  await deleteGray(file, 'b');
  const text = await readFile(file, 'utf8');
  // The comment above the first entry is the list's own comment to yaml; it is kept.
  assert.match(text, /^grays:\n {2}# the office NAS, owned by Ana\n {2}\[\]$/m);
  assert.ok(text.includes('# The registry of grays. Reviewed in PRs.'));
  assert.deepEqual((await loadWhiteConfig(file)).grays, []);
  // And back from empty: the new entry is written in block style.
  await addGray(file, { id: 'c' });
  assert.match(await readFile(file, 'utf8'), /^grays:\n {2}# the office NAS, owned by Ana\n {2}- id: c\n/m);
});

test('addGray works when grays is missing or empty (`grays:`)', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  for (const text of ['control: { listen: "0.0.0.0:7000" }\nports: { range: "20000-20010" }\n', 'control: { listen: "0.0.0.0:7000" }\nports: { range: "20000-20010" }\ngrays:\n']) {
    await writeFile(file, text);
    await addGray(file, { id: 'a' });
    const c = await loadWhiteConfig(file);
    assert.deepEqual(c.grays.map((g) => [g.id, g.services[0]!.publicPort, g.dataPort]), [['a', 20000, 20001]]);
  }
});

test('a file indented with 4 spaces stays indented with 4 spaces', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  const text = `control:\n    listen: "0.0.0.0:7000"\nports:\n    range: "20000-20010"\ngrays:\n-   id: a\n    secret: "${S1}"\n    public_port: 20000\n    data_port: 20001\n`;
  assert.deepEqual(layoutOf(text), { indent: 4, indentSeq: false, lineWidth: 0, minContentWidth: 0 });
  await writeFile(file, text);
  await addGray(file, { id: 'b' });
  const after = await readFile(file, 'utf8');
  assert.ok(after.startsWith('control:\n    listen: "0.0.0.0:7000"\nports:\n    range: "20000-20010"\ngrays:\n'), after);
});

test('secret_env / unreadable secret_file of other grays do not block relayctl edits', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(
    file,
    'control: { listen: "0.0.0.0:7000" }\nports: { range: "20000-20010" }\ngrays:\n  - { id: a, secret_env: RELAY_ONLY_ON_THE_SERVER, public_port: 20000, data_port: 20001 }\n',
  );
  const { entry } = await addGray(file, { id: 'b' }, { env: {} });
  assert.equal(entry.publicPort, 20002);
});

test('five concurrent addGray calls in one process: all five land, with distinct ports', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, BASE.replace('7000-7010', '20000-20999'));
  const results = await Promise.all(['g1', 'g2', 'g3', 'g4', 'g5'].map((id) => addGray(file, { id })));
  const c = await loadWhiteConfig(file);
  assert.deepEqual(c.grays.map((g) => g.id).sort(), ['g1', 'g2', 'g3', 'g4', 'g5', 'office-nas']);
  const ports = results.flatMap((r) => [r.entry.publicPort, r.entry.dataPort]);
  assert.equal(new Set(ports).size, 10);
  assert.ok((await readFile(file, 'utf8')).includes('# the office NAS, owned by Ana'));
});

test('concurrent relayctl processes serialize on the lock file: no edit is lost', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, BASE.replace('7000-7010', '20000-20999'));
  const editModule = new URL('../../src/config/edit.js', import.meta.url).href;
  const script = `const { addGray } = await import(${JSON.stringify(editModule)});
for (const id of process.argv.slice(1)) await addGray(${JSON.stringify(file)}, { id });`;
  const run = (ids: string[]): Promise<void> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script, ...ids], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child exited ${code}: ${stderr}`))));
    });
  await Promise.all([run(['p1a', 'p1b', 'p1c']), run(['p2a', 'p2b', 'p2c']), run(['p3a', 'p3b', 'p3c']), run(['p4a', 'p4b', 'p4c'])]);
  const c = await loadWhiteConfig(file);
  assert.equal(c.grays.length, 13);
  const ports = c.grays.flatMap((g) => [g.services[0]!.publicPort, g.dataPort]);
  assert.equal(new Set(ports).size, 26);
});

test('a file changed by someone else between read and write is re-read, not overwritten', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, BASE);
  // An editor that ignores the lock saves a new gray (using 7004/7005) at the worst moment.
  const theirs = BASE.replace('# trailing comment', `  - id: theirs\n    secret: "${S1}"\n    public_port: 7004\n    data_port: 7005\n# trailing comment`);
  const attempts: number[] = [];
  const { entry } = await addGray(
    file,
    { id: 'mine' },
    {
      beforeCommit: async (attempt) => {
        attempts.push(attempt);
        if (attempt === 1) await writeFile(file, theirs);
      },
    },
  );
  assert.deepEqual(attempts, [1, 2], 'the edit started over once');
  const c = await loadWhiteConfig(file);
  assert.deepEqual(c.grays.map((g) => g.id), ['office-nas', 'theirs', 'mine']);
  assert.deepEqual([entry.publicPort, entry.dataPort], [7006, 7007], 'ports allocated from the fresh file');
});

test('a file that keeps changing is never overwritten: CONCURRENT_EDIT', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, BASE);
  let last = '';
  const err = await rejects(
    deleteGray(file, 'office-nas', {
      maxAttempts: 3,
      beforeCommit: async (attempt) => {
        last = `${BASE}# edited elsewhere ${attempt}\n`;
        await writeFile(file, last);
      },
    }),
    ErrorCodes.CONCURRENT_EDIT,
  );
  assert.match(err.message, /kept changing while it was being edited \(3 attempts\)/);
  assert.equal(await readFile(file, 'utf8'), last, "the other writer's content is what remains");
  assert.deepEqual((await readdir(dir)).sort(), ['relay.yaml']);
});

test('a symlinked config is edited in place: the link stays a link', async (t) => {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'repo'));
  const real = join(dir, 'repo', 'relay.yaml');
  await writeFile(real, BASE);
  const link = join(dir, 'relay.yaml');
  await symlink(real, link);
  await addGray(link, { id: 'x' });
  assert.ok((await lstat(link)).isSymbolicLink());
  assert.deepEqual((await loadWhiteConfig(real)).grays.map((g) => g.id), ['office-nas', 'x']);
});

test('a lock left by a dead process is broken; a live one is waited for, then CONCURRENT_EDIT', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, BASE);
  const { hostname } = await import('node:os');
  // A pid that is surely not running: a child that has already exited.
  const dead = await new Promise<number>((resolve) => {
    const c = spawn(process.execPath, ['-e', '0']);
    c.on('exit', () => resolve(c.pid!));
  });
  await writeFile(`${file}.lock`, JSON.stringify({ pid: dead, host: hostname(), at: Date.now() }));
  await addGray(file, { id: 'after-dead-lock' });

  // A live holder (this very process, as another relayctl would be): wait, then give up.
  await writeFile(`${file}.lock`, JSON.stringify({ pid: process.ppid, host: hostname(), at: Date.now() }));
  const err = await rejects(addGray(file, { id: 'blocked' }, { lock: { timeoutMs: 300, staleMs: 60_000 } }), ErrorCodes.CONCURRENT_EDIT);
  assert.match(err.message, /another edit holds .*relay\.yaml\.lock \(pid \d+ on /);
  // Old enough: broken as stale.
  await addGray(file, { id: 'after-stale-lock' }, { lock: { staleMs: 1 } });
  assert.deepEqual((await loadWhiteConfig(file)).grays.map((g) => g.id), ['office-nas', 'after-dead-lock', 'after-stale-lock']);
});

test('renderGrayConfig gives a gray.yaml that loads', async () => {
  const secret = generateSecret();
  const text = renderGrayConfig({ white: '[2001:db8::1]:7000', id: 'office-nas', secret, target: '127.0.0.1:445' });
  const c = await parseGrayConfig(text, null);
  assert.deepEqual(c.whites, [{ host: '2001:db8::1', port: 7000 }]);
  assert.equal(c.id, 'office-nas');
  assert.ok(c.secret.equals(Buffer.from(secret, 'base64url')));
  assert.deepEqual(c.services[0]!.target, { host: '127.0.0.1', port: 445 });
  const placeholder = renderGrayConfig({ white: 'white.example.com:7000', id: 'x', secret });
  assert.match(placeholder, /CHANGE ME/);
  assert.equal((await parseGrayConfig(placeholder, null)).services[0]!.target.port, 8080);
});

test('edit errors: a missing file is CONFIG_READ; an unparsable file is CONFIG_PARSE', async (t) => {
  const dir = await tempDir(t);
  await rejects(addGray(join(dir, 'nope.yaml'), { id: 'a' }), ErrorCodes.CONFIG_READ);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, 'grays: [\n');
  await rejects(deleteGray(file, 'a'), ErrorCodes.CONFIG_PARSE);
});

