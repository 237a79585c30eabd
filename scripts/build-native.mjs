#!/usr/bin/env node
// Builds the native splice data plane (native/) with the node-gyp that npm ships. Runs at
// `npm ci` (the install script) and before every `npm run build`, where an up-to-date build
// only costs a make check. A failed build is not fatal: relay then runs on its JavaScript data
// plane and says so at startup; the reason is printed here.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const nativeDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'native');
// Inside npm scripts npm names its node-gyp; run by hand, look beside the npm of this node.
const bundledGyp = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const gyp = process.env.npm_config_node_gyp ?? (existsSync(bundledGyp) ? bundledGyp : null);
const command = gyp ? [process.execPath, gyp] : ['node-gyp'];
const configured = existsSync(join(nativeDir, 'build', 'Makefile'));
const args = configured ? ['build'] : ['rebuild'];
// Build against this node's own headers (no download: the machine may have no network).
const ownHeaders = join(dirname(process.execPath), '..');
const nodedir = process.env.npm_config_nodedir ?? (existsSync(join(ownHeaders, 'include', 'node', 'node_api.h')) ? ownHeaders : null);
if (nodedir) args.push(`--nodedir=${nodedir}`);

// Quiet when all is well (this runs before every build); the compiler's words when it is not.
const run = spawnSync(command[0], [...command.slice(1), ...args, '--loglevel=warn'], { cwd: nativeDir, encoding: 'utf8' });
if (run.status !== 0) {
  process.stderr.write(`${run.stdout ?? ''}${run.stderr ?? ''}`);
  const why = run.error ? run.error.message : `node-gyp exited with ${run.status}`;
  console.warn(`relay: the native splice data plane was not built (${why}); relay will use its JavaScript data plane.`);
  console.warn('relay: to build it, install python3, make and g++ (Debian: apt-get install -y python3 make g++) and run npm run build.');
}
