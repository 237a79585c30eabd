import { createRequire } from 'node:module';

// Read from package.json so there is one place to bump. This file compiles to dist/src/, so
// the repo root is two levels up.
const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };
export const VERSION: string = pkg.version;
