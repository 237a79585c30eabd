// The white's console on a terminal: log lines step around the prompt (cleared, written, prompt
// and typed text redrawn), and /quit stops the white. A PassThrough marked as a TTY stands in for
// the terminal; the logger writes to the same stream, as stdout and stderr share one terminal.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
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
});
