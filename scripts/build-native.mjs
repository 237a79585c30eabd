#!/usr/bin/env node
// Builds the native addons with the node-gyp that npm ships: native/ (the splice engine,
// Node-API only) and native/v8-memory/ (V8's memory-reducing collection, tied to this Node's
// ABI). Runs before every `npm run build` (an up-to-date build only costs a make check) and, with
// --install, as the package's install script, where a prebuilt engine that loads
// (native/prebuilds/, shipped in the package) is used as it is. A failed build is not fatal:
// relay then runs on its JavaScript data plane (or with a plainer collection) and says so.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const nativeDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'native');
const install = process.argv.includes('--install');

// Inside npm scripts npm names its node-gyp; run by hand, look beside the npm of this node.
const bundledGyp = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const gyp = process.env.npm_config_node_gyp ?? (existsSync(bundledGyp) ? bundledGyp : null);
const command = gyp ? [process.execPath, gyp] : ['node-gyp'];
// Build against this node's own headers (no download: the machine may have no network).
const ownHeaders = join(dirname(process.execPath), '..');
const nodedir = process.env.npm_config_nodedir ?? (existsSync(join(ownHeaders, 'include', 'node', 'node_api.h')) ? ownHeaders : null);

/** Runs node-gyp in dir; returns null when built, else the reason with the compiler's words. */
function build(dir) {
  const args = existsSync(join(dir, 'build', 'Makefile')) ? ['build'] : ['rebuild'];
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  // Quiet when all is well; the compiler's words when it is not.
  const run = spawnSync(command[0], [...command.slice(1), ...args, '--loglevel=warn'], { cwd: dir, encoding: 'utf8' });
  if (run.status === 0) return null;
  return { output: `${run.stdout ?? ''}${run.stderr ?? ''}`, why: run.error ? run.error.message : `node-gyp exited with ${run.status}` };
}

function prebuiltEngineLoads() {
  try {
    const file = createRequire(import.meta.url)('node-gyp-build').resolve(nativeDir);
    if (!file.includes(`${join('native', 'prebuilds')}`)) return false;
    createRequire(import.meta.url)(file);
    console.log(`relay: using the prebuilt native engine ${file}`);
    return true;
  } catch {
    return false;
  }
}

const hint = 'install python3, make and g++ (Debian: apt-get install -y python3 make g++) and run npm rebuild (npm run build in a clone)';
if (!(install && prebuiltEngineLoads())) {
  const failed = build(nativeDir);
  if (failed) {
    process.stderr.write(failed.output);
    console.warn(`relay: the native splice data plane was not built (${failed.why}); relay will use its JavaScript data plane.`);
    console.warn(`relay: to build it, ${hint}.`);
  }
}
const memoryFailed = build(join(nativeDir, 'v8-memory'));
if (memoryFailed) {
  if (!install) process.stderr.write(memoryFailed.output);
  console.warn(`relay: the V8 memory helper (native/v8-memory) was not built (${memoryFailed.why}); an idle relay may keep more memory resident. To build it, ${hint}.`);
}
