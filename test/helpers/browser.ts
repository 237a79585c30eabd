// A real browser for the tests: Debian's chromium, driven headless by puppeteer-core (which
// brings no browser of its own). No browser is a failure, never a skip: .ci/run installs it.
import { existsSync } from 'node:fs';
import puppeteer, { type Browser } from 'puppeteer-core';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];

export function chromiumPath(): string {
  const fromEnv = process.env.RELAY_CHROMIUM;
  if (fromEnv) return fromEnv;
  const found = CANDIDATES.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`no browser found at ${CANDIDATES.join(', ')} (set RELAY_CHROMIUM, or apt-get install chromium as .ci/run does)`);
  return found;
}

export function launchBrowser(): Promise<Browser> {
  return puppeteer.launch({
    executablePath: chromiumPath(),
    headless: true,
    defaultViewport: { width: 1280, height: 800 },
    args: [
      // Root (CI) cannot use chromium's sandbox; the pages are our own.
      ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
      '--disable-gpu',
      '--disable-dev-shm-usage',
      // Names other than localhost resolve to nothing: the browser reaches loopback only.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
    ],
  });
}
