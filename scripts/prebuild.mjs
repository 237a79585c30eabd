#!/usr/bin/env node
// `npm pack` / `npm publish` (prepack): builds the engine with prebuildify into
// native/prebuilds/<platform>-<arch>/, which the package ships and node-gyp-build loads where no
// build from source exists. Node-API only (NAPI_VERSION in binding.gyp), so this one binary
// serves every Node version the package supports. Built against this node's own headers: no
// download.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const nativeDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'native');
const require = createRequire(import.meta.url);
const bundledGyp = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const gyp = process.env.npm_config_node_gyp ?? bundledGyp;
const ownHeaders = join(dirname(process.execPath), '..');
if (!existsSync(join(ownHeaders, 'include', 'node', 'node_api.h'))) {
  console.error(`prebuild: no Node headers under ${ownHeaders}/include/node`);
  process.exit(1);
}
const prebuildify = join(dirname(require.resolve('prebuildify/package.json')), 'bin.js');
const run = spawnSync(process.execPath, [prebuildify, '--napi', '--strip', '--tag-libc', '--target', `node@${process.versions.node}`], {
  cwd: nativeDir,
  stdio: 'inherit',
  env: { ...process.env, npm_config_nodedir: ownHeaders, PREBUILD_NODE_GYP: gyp },
});
process.exit(run.status ?? 1);
