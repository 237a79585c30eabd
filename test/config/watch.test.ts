// The config watcher against the ways files really get saved. Each test waits for the callback
// (generous timeout) instead of sleeping; the safety-net poll is off so that only the
// file-system notifications can make a test pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rename, rm, symlink, unlink, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watchConfigFile, type ConfigWatcher } from '../../src/config/watch.js';

const TIMEOUT_MS = 10_000;

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'relay-watch-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Records each onChange call with the file's content at that moment; waits for the nth one. */
class Calls {
  readonly contents: string[] = [];
  private waiters: Array<{ n: number; resolve: () => void }> = [];
  constructor(private readonly file: string) {}

  readonly onChange = (): void => {
    // The content is read synchronously-enough for the test: the watcher only calls after a quiet
    // period, and the test writes nothing while it waits.
    void readFile(this.file, 'utf8')
      .catch(() => '<missing>')
      .then((text) => {
        this.contents.push(text);
        for (const w of this.waiters.filter((w) => this.contents.length >= w.n)) w.resolve();
        this.waiters = this.waiters.filter((w) => this.contents.length < w.n);
      });
  };

  waitFor(n: number): Promise<void> {
    if (this.contents.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for call ${n}; calls so far: ${JSON.stringify(this.contents)}`)), TIMEOUT_MS);
      this.waiters.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }
}

async function start(
  t: { after: (fn: () => Promise<void>) => void },
  file: string,
  opts: { polling?: boolean; debounceMs?: number } = {},
): Promise<{ calls: Calls; watcher: ConfigWatcher }> {
  const calls = new Calls(file);
  const watcher = watchConfigFile(file, {
    polling: opts.polling ?? false,
    debounceMs: opts.debounceMs ?? 50,
    onChange: calls.onChange,
    safetyIntervalMs: 0,
    pollIntervalMs: 50,
  });
  t.after(() => watcher.close());
  await watcher.ready;
  return { calls, watcher };
}

for (const polling of [false, true]) {
  const mode = polling ? ' (polling)' : '';

  test(`in-place write${mode}`, async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'relay.yaml');
    await writeFile(file, 'v: 1\n');
    const { calls } = await start(t, file, { polling });
    await appendFile(file, 'w: 2\n');
    await calls.waitFor(1);
    assert.equal(calls.contents[0], 'v: 1\nw: 2\n');
  });

  test(`temp file renamed over the config${mode}`, async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'relay.yaml');
    await writeFile(file, 'v: 1\n');
    const { calls } = await start(t, file, { polling });
    await writeFile(join(dir, '.relay.yaml.tmp'), 'v: 2\n');
    await rename(join(dir, '.relay.yaml.tmp'), file);
    await calls.waitFor(1);
    assert.equal(calls.contents[0], 'v: 2\n');
    // The watcher keeps working on the new inode.
    await writeFile(join(dir, '.relay.yaml.tmp'), 'v: 3\n');
    await rename(join(dir, '.relay.yaml.tmp'), file);
    await calls.waitFor(2);
    assert.equal(calls.contents[1], 'v: 3\n');
  });
}

test('delete and recreate (editor style)', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, 'v: 1\n');
  const { calls } = await start(t, file);
  await unlink(file);
  await writeFile(file, 'v: 2\n');
  await calls.waitFor(1);
  assert.equal(calls.contents[0], 'v: 2\n');
  // Deleted and recreated later, in two separate bursts: still one call, for the new file.
  await unlink(file);
  await new Promise((r) => setTimeout(r, 200));
  await writeFile(file, 'v: 3\n');
  await calls.waitFor(2);
  assert.equal(calls.contents[1], 'v: 3\n');
});

test('a file that does not exist yet is picked up when it appears', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  const { calls } = await start(t, file);
  await writeFile(file, 'v: 1\n');
  await calls.waitFor(1);
  assert.equal(calls.contents[0], 'v: 1\n');
});

test('Kubernetes ConfigMap symlink swap', async (t) => {
  const dir = await tempDir(t);
  // The layout kubelet creates: relay.yaml -> ..data/relay.yaml, ..data -> ..<timestamp>/
  await mkdir(join(dir, '..2024_01_01_00_00_00.1'));
  await writeFile(join(dir, '..2024_01_01_00_00_00.1', 'relay.yaml'), 'v: 1\n');
  await symlink('..2024_01_01_00_00_00.1', join(dir, '..data'));
  await symlink('..data/relay.yaml', join(dir, 'relay.yaml'));
  const file = join(dir, 'relay.yaml');
  const { calls } = await start(t, file);

  // An update: new timestamped dir, new ..data_tmp link, renamed over ..data, old dir removed.
  const swap = async (stamp: string, content: string, old: string): Promise<void> => {
    await mkdir(join(dir, stamp));
    await writeFile(join(dir, stamp, 'relay.yaml'), content);
    await symlink(stamp, join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    await rm(join(dir, old), { recursive: true });
  };
  await swap('..2024_01_01_00_01_00.2', 'v: 2\n', '..2024_01_01_00_00_00.1');
  await calls.waitFor(1);
  assert.equal(calls.contents[0], 'v: 2\n');
  await swap('..2024_01_01_00_02_00.3', 'v: 3\n', '..2024_01_01_00_01_00.2');
  await calls.waitFor(2);
  assert.equal(calls.contents[1], 'v: 3\n');
});

test('a symlink to a file in another folder follows changes of the target', async (t) => {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'repo'));
  await mkdir(join(dir, 'etc'));
  await writeFile(join(dir, 'repo', 'relay.yaml'), 'v: 1\n');
  await symlink(join(dir, 'repo', 'relay.yaml'), join(dir, 'etc', 'relay.yaml'));
  const file = join(dir, 'etc', 'relay.yaml');
  const { calls } = await start(t, file);
  await writeFile(join(dir, 'repo', '.tmp'), 'v: 2\n');
  await rename(join(dir, 'repo', '.tmp'), join(dir, 'repo', 'relay.yaml'));
  await calls.waitFor(1);
  assert.equal(calls.contents[0], 'v: 2\n');
});

test('a burst of 5 quick writes gives one call, after the last write', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, 'v: 0\n');
  const { calls } = await start(t, file, { debounceMs: 300 });
  for (let i = 1; i <= 5; i++) await writeFile(file, `v: ${i}\n`);
  await calls.waitFor(1);
  assert.equal(calls.contents[0], 'v: 5\n', 'the call comes after the burst, not during it');
  // If the burst had produced a second call, it would be the second one recorded, before this
  // marker's; the marker's call being second proves there was exactly one for the burst.
  await writeFile(file, 'marker: true\n');
  await calls.waitFor(2);
  assert.deepEqual(calls.contents, ['v: 5\n', 'marker: true\n']);
});

test('other files in the folder (lock, temp, unrelated) do not trigger a call', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, 'v: 1\n');
  const { calls } = await start(t, file);
  await writeFile(join(dir, 'relay.yaml.lock'), '1');
  await writeFile(join(dir, 'other.txt'), 'x');
  await unlink(join(dir, 'relay.yaml.lock'));
  await writeFile(file, 'marker: true\n');
  await calls.waitFor(1);
  assert.deepEqual(calls.contents, ['marker: true\n']);
});

test('the safety-net poll notices a change even without notifications', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, 'v: 1\n');
  const calls = new Calls(file);
  const watcher = watchConfigFile(file, { polling: false, debounceMs: 20, onChange: calls.onChange, safetyIntervalMs: 100 });
  t.after(() => watcher.close());
  await watcher.ready;
  await writeFile(file, 'v: 2\n');
  await calls.waitFor(1);
  assert.equal(calls.contents[0], 'v: 2\n');
});

test('close() stops the calls and resolves', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'relay.yaml');
  await writeFile(file, 'v: 1\n');
  const { calls, watcher } = await start(t, file);
  await watcher.close();
  await writeFile(file, 'v: 2\n');
  // Nothing can be awaited for a call that must not come; a fresh watcher's call shows the
  // event was delivered, and the closed one stayed silent.
  const { calls: other } = await start(t, file);
  await writeFile(file, 'v: 3\n');
  await other.waitFor(1);
  assert.deepEqual(calls.contents, []);
});
