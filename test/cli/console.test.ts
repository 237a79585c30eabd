// The white's console on a terminal: log lines step around the prompt (cleared, written, prompt
// and typed text redrawn), and /quit stops the white. A PassThrough marked as a TTY stands in for
// the terminal; the logger writes to the same stream, as stdout and stderr share one terminal.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { parseWhiteConfig } from '../../src/config/load.js';
import { describe, it } from 'node:test';
import type { AdminState } from '../../src/admin/server.js';
import { startConsole } from '../../src/cli/console.js';
import { PromptGuard } from '../../src/cli/prompt-guard.js';
import { createLogger } from '../../src/log.js';
import { emptyAdminState } from '../helpers/admin-state.js';

const state = emptyAdminState;

function terminal(): { input: PassThrough & { isTTY: boolean }; screen: PassThrough; text: () => string } {
  const input = Object.assign(new PassThrough(), { isTTY: true });
  const screen = new PassThrough();
  let seen = '';
  screen.setEncoding('utf8').on('data', (t: string) => (seen += t));
  return { input, screen, text: () => seen };
}

/** The prompt with "/sh" typed after it (readline may put a cursor move between the two). */
const PROMPT_WITH_TEXT = /relay> (\x1b\[\d+G)?\/sh/;

/** Resolves once the screen shows `what` (data events run in order, so the check is exact). */
function until(screen: PassThrough, text: () => string, what: string | RegExp): Promise<void> {
  return new Promise((resolve) => {
    const check = (): void => {
      if (typeof what === 'string' ? !text().includes(what) : !what.test(text())) return;
      screen.off('data', check);
      resolve();
    };
    screen.on('data', check);
    check();
  });
}

describe('white console', () => {
  for (const withGuard of [true, false]) {
    it(`a log line ${withGuard ? 'clears the prompt line, then the prompt and the typed text are redrawn' : 'without the guard lands after the prompt (the case the guard fixes)'}`, async () => {
      const { input, screen, text } = terminal();
      const guard = withGuard ? new PromptGuard() : undefined;
      const logger = createLogger({ name: 'white', destination: screen, ...(guard ? { guard } : {}) });
      const c = startConsole({ configPath: 'unused.yaml', state, input, output: screen, ...(guard ? { guard } : {}) });
      try {
        input.write('/sh');
        await until(screen, text, PROMPT_WITH_TEXT);
        const mark = text().length;
        logger.info('gray connected');
        await until(screen, text, 'gray connected');
        await new Promise<void>((resolve) => setImmediate(resolve));
        const after = text().slice(mark);
        const logAt = after.indexOf('{"level":30');
        assert.ok(logAt >= 0, JSON.stringify(after));
        const lineEnd = after.indexOf('\n', logAt);
        if (withGuard) {
          assert.ok(after.slice(0, logAt).includes('\x1b[2K'), `the prompt line is cleared first: ${JSON.stringify(after)}`);
          assert.match(after.slice(lineEnd + 1), PROMPT_WITH_TEXT, 'the prompt and "/sh" are drawn again under the log line');
        } else {
          assert.doesNotMatch(after.slice(lineEnd + 1), /relay> /);
        }
      } finally {
        c.close();
      }
    });
  }

  it('/quit stops the white (onQuit) and ends the console; /help lists it', async () => {
    const { input, screen, text } = terminal();
    let quits = 0;
    const quit = new Promise<void>((resolve) => {
      startConsole({
        configPath: 'unused.yaml',
        state,
        input,
        output: screen,
        onQuit: () => {
          quits += 1;
          resolve();
        },
      });
    });
    input.write('/help\n');
    await until(screen, text, '/quit           stop the white');
    input.write('/quit\n');
    await quit;
    assert.equal(quits, 1);
    assert.match(text(), /stopping/);
    // The console is closed: a line typed now reaches no command (readline has let go of the input).
    assert.equal(input.listenerCount('keypress'), 0);
  });

  it('/service add and /service delete edit a gray in the config file, as relayctl service does', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'relay-console-'));
    const path = join(dir, 'white.yaml');
    await writeFile(path, `control: { listen: "127.0.0.1:7400" }\nports: { range: "21300-21310" }\ngrays:\n  - { id: nas, secret: "${'A'.repeat(43)}", public_port: 21300, data_port: 21301 }\n`, { mode: 0o600 });
    const { input, screen, text } = terminal();
    const c = startConsole({ configPath: path, state, input, output: screen });
    try {
      input.write('/service add nas ssh --allow 127.0.0.1/32\n');
      await until(screen, text, 'added service "ssh" to gray "nas"');
      const white = await parseWhiteConfig(await readFile(path, 'utf8'), path);
      assert.deepEqual(white.grays[0]!.services.map((x) => [x.name, x.publicPort, x.allow.map((a) => a.text)]), [['default', 21300, []], ['ssh', 21302, ['127.0.0.1/32']]]);
      input.write('/service delete nas ssh\n');
      await until(screen, text, 'deleted service "ssh" of gray "nas"');
    } finally {
      c.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
