// The dashboard in a real browser (Debian's chromium, headless, through puppeteer-core): a real
// white process, then a real gray process, watched live without a reload; a white with 1,000
// grays (payload and time to first render reported, not asserted); and the token in a browser.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'puppeteer-core';
import { DashboardFeed } from '../../src/dashboard/feed.js';
import { DashboardServer } from '../../src/dashboard/server.js';
import { newGrayStats, type WhiteSnapshot } from '../../src/engine/stats.js';
import { silentLogger } from '../../src/log.js';
import { launchBrowser } from '../helpers/browser.js';
import { roundTrip, startService } from '../helpers/tunnel.js';
import { freePort, runRelay, tempDir, writeDeployment, type RelayProcess } from '../e2e/harness.js';

/** Everything the page loaded came from its own origin, and it threw nothing. */
function watchPage(page: Page): { urls: string[]; errors: string[] } {
  const seen = { urls: [] as string[], errors: [] as string[] };
  page.on('request', (r) => void seen.urls.push(r.url()));
  page.on('pageerror', (e) => void seen.errors.push(String(e)));
  page.on('console', (m) => void (m.type() === 'error' && seen.errors.push(m.text())));
  return seen;
}

const rowClass = (page: Page, id: string): Promise<string> => page.$eval(`tr[data-id="${id}"]`, (tr) => tr.className);
const visibleRows = (page: Page): Promise<number> => page.$$eval('#grays tbody tr', (trs) => trs.filter((tr) => !(tr as HTMLElement).hidden).length);

describe('dashboard in a real browser', () => {
  let browser: Browser;

  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  it('shows a real gray go online within a second of its login, its traffic, and offline again', { timeout: 90_000 }, async (t) => {
    const dir = await tempDir();
    const service = await startService();
    const dashboardPort = await freePort();
    const d = await writeDeployment(dir.path, { targetPort: service.port, pool: 2, whiteExtra: `dashboard: { listen: "127.0.0.1:${dashboardPort}" }` });
    let white: RelayProcess | undefined;
    let gray: RelayProcess | undefined;
    const page = await browser.newPage();
    try {
      white = runRelay(['white', '--config', d.whitePath]);
      const listening = await white.waitForMsg('dashboard listening');
      const url = String(listening.url);
      assert.equal(url, `http://127.0.0.1:${dashboardPort}/`);
      const seen = watchPage(page);
      await page.goto(url);
      await page.waitForSelector('body[data-rendered="1"]');
      await page.waitForSelector('#link.live');
      assert.equal(await rowClass(page, 'e2e'), 'offline');
      assert.equal(await page.$eval('tr[data-id="e2e"] .badge', (b) => b.textContent), 'offline');
      await page.evaluate(() => ((window as unknown as { marker: string }).marker = 'same page'));

      gray = runRelay(['gray', '--config', d.grayPath]);
      const login = await white.waitForMsg('gray connected');
      await page.waitForSelector('tr[data-id="e2e"].online', { timeout: 5000 });
      const shownAt = Number(await page.$eval('tr[data-id="e2e"]', (tr) => (tr as HTMLElement).dataset.changedAt));
      const latency = shownAt - Number(login.time);
      t.diagnostic(`online on the page ${latency} ms after the white logged "gray connected"`);
      assert.ok(latency < 1000, `shown ${latency} ms after the log line`);
      assert.equal(await page.evaluate(() => (window as unknown as { marker?: string }).marker), 'same page', 'no reload');
      await page.waitForFunction(() => document.querySelector('tr[data-id="e2e"] td:nth-child(6)')?.textContent === '2 / 2', { timeout: 10_000 });
      assert.equal(await page.$eval('#t-online', (e) => e.textContent), '1 / 1');

      const payload = randomBytes(64 * 1024);
      const echoed = await roundTrip(d.publicPort, payload);
      assert.ok(echoed.equals(payload));
      await page.waitForFunction(
        (n: number) =>
          Number(document.querySelector('tr[data-id="e2e"] .bytes-in')?.getAttribute('title')?.split(' ')[0]) >= n &&
          Number(document.querySelector('tr[data-id="e2e"] .bytes-out')?.getAttribute('title')?.split(' ')[0]) >= n,
        { timeout: 5000 },
        payload.length,
      );
      assert.equal(await page.$eval('tr[data-id="e2e"] .bytes-in', (e) => e.textContent), '64 KiB');
      // The sparkline rises at the next traffic sample (every 5 s).
      await page.waitForFunction(
        () => (document.querySelector('tr[data-id="e2e"] polyline')?.getAttribute('points') ?? '').split(' ').some((p) => Number(p.split(',')[1]) < 20),
        { timeout: 10_000 },
      );
      const online = join(dir.path, 'dashboard-online.png');
      await page.screenshot({ path: online, fullPage: true });

      await gray.kill('SIGTERM');
      await white.waitForMsg('gray disconnected');
      await page.waitForSelector('tr[data-id="e2e"].offline', { timeout: 5000 });
      assert.equal(await page.$eval('#t-online', (e) => e.textContent), '0 / 1');
      const kinds = await page.$$eval('#events li .kind', (els) => els.map((e) => e.textContent));
      assert.deepEqual(kinds.slice(0, 2), ['gray.disconnected', 'gray.connected'], 'newest first');

      // A reload that adds a gray: a new row and the event, still without a reload of the page.
      const [publicPort, dataPort] = [await freePort(), await freePort()];
      await appendFile(d.whitePath, `  - id: added-later\n    secret: "${randomBytes(32).toString('base64url')}"\n    public_port: ${publicPort}\n    data_port: ${dataPort}\n`);
      await white.waitForMsg('config reloaded');
      await page.waitForSelector('tr[data-id="added-later"].offline', { timeout: 5000 });
      await page.waitForFunction(() => document.querySelector('#events li .kind')?.textContent === 'config.reloaded', { timeout: 5000 });
      assert.equal(await page.$eval('#events li .text', (e) => e.textContent), 'added added-later');
      assert.equal(await page.$eval('#t-online', (e) => e.textContent), '0 / 2');
      assert.equal(await page.evaluate(() => (window as unknown as { marker?: string }).marker), 'same page', 'no reload');
      const offline = join(dir.path, 'dashboard-offline.png');
      await page.screenshot({ path: offline, fullPage: true });

      const origin = new URL(url).origin;
      assert.deepEqual(
        seen.urls.filter((u) => !u.startsWith(`${origin}/`)),
        [],
        'no request leaves the white',
      );
      assert.deepEqual(seen.errors, []);
      t.diagnostic(`screenshots: ${online} ${offline}`);
      console.log(`dashboard screenshots: ${online} ${offline}`);
    } finally {
      await page.close();
      await gray?.kill();
      await white?.kill();
      service.server.close();
      // The screenshots stay for a person to look at; the configs (with a secret) go.
      await Promise.all([rm(d.whitePath, { force: true }), rm(d.grayPath, { force: true })]);
    }
  });

  it('renders 1,000 grays from a real white, filters and sorts them (sizes and times reported)', { timeout: 120_000 }, async (t) => {
    const dir = await tempDir();
    const page = await browser.newPage();
    let white: RelayProcess | undefined;
    try {
      const count = 1000;
      let url = '';
      // 2,000 listeners need a block of free ports; one taken by someone else fails the start,
      // so another block is tried.
      for (let attempt = 0; attempt < 3 && url === ''; attempt++) {
        const base = 12000 + 2 * Math.floor(Math.random() * 8000);
        // The control and dashboard ports come from outside the block, which the white would
        // refuse as a conflict.
        const outside = async (): Promise<number> => {
          for (let tries = 0; tries < 100; tries++) {
            const port = await freePort();
            if (port < base || port >= base + 2 * count) return port;
          }
          throw new Error(`no free port outside ${base}..${base + 2 * count - 1} in 100 tries`);
        };
        const lines = [`control: { listen: "127.0.0.1:${await outside()}" }`, `bind: "127.0.0.1"`, `admin: { socket: null }`];
        lines.push(`dashboard: { listen: "127.0.0.1:${await outside()}" }`, `log: { level: warn }`, 'grays:');
        for (let i = 0; i < count; i++) {
          lines.push(`  - { id: gray-${String(i).padStart(4, '0')}, secret: "${randomBytes(16).toString('base64url')}", public_port: ${base + 2 * i}, data_port: ${base + 2 * i + 1} }`);
        }
        const file = join(dir.path, 'white.yaml');
        await writeFile(file, `${lines.join('\n')}\n`);
        const started = Date.now();
        white = runRelay(['white', '--config', file], { RELAY_LOG_LEVEL: 'info' });
        try {
          url = String((await white.waitForMsg('dashboard listening', 60_000)).url);
          t.diagnostic(`white with ${count} grays up in ${Date.now() - started} ms`);
        } catch (err) {
          await white.kill();
          if (attempt === 2) throw err;
        }
      }

      const seen = watchPage(page);
      await page.goto(url);
      await page.waitForSelector(`body[data-rendered="${count}"]`, { timeout: 30_000 });
      const firstRender = await page.evaluate(() => performance.getEntriesByName('relay-first-render')[0]!.startTime);
      // What went over the wire (encoded) and what the page parsed (decoded), as the browser saw it.
      const sizes = await page.evaluate(() => {
        const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming;
        const entries = [nav, ...(performance.getEntriesByType('resource') as PerformanceResourceTiming[])];
        return entries.map((e) => ({ name: new URL(e.name).pathname, encoded: e.encodedBodySize, decoded: e.decodedBodySize }));
      });
      const sizeOf = (path: string): { encoded: number; decoded: number } => sizes.find((e) => e.name === path)!;
      const state = sizeOf('/api/state');
      assert.ok(state.encoded > 0 && state.encoded < state.decoded, 'the state came gzipped');
      assert.equal(await page.$$eval('#grays tbody tr', (trs) => trs.length), count);
      assert.equal(await visibleRows(page), count);
      assert.equal(await page.$eval('#t-online', (e) => e.textContent), `0 / ${count}`);
      await page.waitForSelector('#link.live');

      // Filter through the input, as a person types; each step's time measured in the page.
      const filterTo = (text: string): Promise<{ ms: number; shown: number }> =>
        page.evaluate((value: string) => {
          const input = document.getElementById('filter') as HTMLInputElement;
          const t0 = performance.now();
          input.value = value;
          input.dispatchEvent(new Event('input'));
          const ms = performance.now() - t0;
          return { ms, shown: [...document.querySelectorAll<HTMLElement>('#grays tbody tr')].filter((tr) => !tr.hidden).length };
        }, text);
      await page.type('#filter', 'gray-0999');
      assert.equal(await visibleRows(page), 1);
      assert.equal(await page.$eval('#shown', (e) => e.textContent), `1 of ${count} grays shown`);
      const byId = await filterTo('gray-05');
      assert.equal(byId.shown, 100);
      const all = await filterTo('offline');
      assert.equal(all.shown, count);
      assert.equal((await filterTo('online')).shown, 0);
      assert.equal((await filterTo('')).shown, count);

      // Sort by public port, descending: the last gray comes first.
      const sortMs = await page.evaluate(() => {
        const th = document.querySelector<HTMLElement>('th[data-sort="publicPort"]')!;
        const t0 = performance.now();
        th.click();
        th.click();
        return performance.now() - t0;
      });
      assert.equal(await page.$eval('#grays tbody tr', (tr) => (tr as HTMLElement).dataset.id), 'gray-0999');
      assert.equal(await page.$eval('th[data-sort="publicPort"]', (th) => th.getAttribute('aria-sort')), 'descending');
      assert.deepEqual(seen.errors, []);

      const report =
        `${count} grays: /api/state ${state.encoded} bytes gzipped, ${state.decoded} as JSON (${(state.decoded / count).toFixed(0)} per gray); ` +
        `page ${sizeOf('/').decoded} + app.js ${sizeOf('/app.js').decoded} + style.css ${sizeOf('/style.css').decoded} bytes; ` +
        `first render ${firstRender.toFixed(0)} ms after navigation start; filter ${byId.ms.toFixed(1)} ms (by id) ${all.ms.toFixed(1)} ms (all shown); two sorts (ascending, then descending) ${sortMs.toFixed(1)} ms`;
      t.diagnostic(report);
      console.log(`dashboard: ${report}`);
    } finally {
      await page.close();
      await white?.kill();
      await dir.cleanup();
    }
  });

  it('with a token: 401 for a browser without it, the page and its stream with it', { timeout: 30_000 }, async () => {
    const token = randomBytes(24).toString('base64url');
    const snapshot: WhiteSnapshot = {
      configPath: null,
      startedAt: Date.now(),
      grays: [{ ...newGrayStats(), id: 'locked-gray', publicPort: 1, dataPort: 2, connected: false }],
      counters: { authFailures: 0, dataRejections: {}, controlRejections: {}, reloads: { ok: 0, rejected: 0 }, lastReload: null },
      hooks: [],
    };
    const feed = new DashboardFeed({ version: 'test', snapshot: () => snapshot });
    feed.start();
    const server = new DashboardServer({ host: '127.0.0.1', port: 0, token, logger: silentLogger() }, feed);
    await server.start();
    const url = `http://127.0.0.1:${server.address!.port}/`;
    const without = await browser.newPage();
    const withToken = await browser.newPage();
    try {
      // Headless chromium has no one to ask for the password: it ends the navigation with an
      // error once the white has answered 401.
      // The response event may come after goto has already failed: wait for it, not for goto.
      const answered = without.waitForResponse((r) => r.url() === url, { timeout: 10_000 });
      await assert.rejects(without.goto(url), /ERR_INVALID_AUTH_CREDENTIALS/);
      assert.equal((await answered).status(), 401);
      assert.equal(await without.$('#grays'), null, 'no page without the token');
      await withToken.authenticate({ username: 'me', password: token });
      const seen = watchPage(withToken);
      const ok = await withToken.goto(url);
      assert.equal(ok?.status(), 200);
      await withToken.waitForSelector('tr[data-id="locked-gray"].offline');
      await withToken.waitForSelector('#link.live');
      assert.deepEqual(seen.errors, []);
    } finally {
      await without.close();
      await withToken.close();
      await server.close();
      feed.stop();
    }
  });
});
