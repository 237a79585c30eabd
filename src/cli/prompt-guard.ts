// The console's prompt and the log share one terminal (stderr and stdout). A log line written
// while the prompt shows would land after "relay> /sh", and what was typed would no longer be on
// screen: the guard clears the prompt line, lets the log line through, then redraws the prompt
// with the typed text and the cursor where they were. While a command runs there is no prompt,
// and log lines pass untouched.
import readline from 'node:readline';
import type { LineGuard } from '../log.js';

export class PromptGuard implements LineGuard {
  private prompt: { rl: readline.Interface; output: NodeJS.WritableStream } | null = null;

  /** `rl` has just drawn its prompt on `output`. */
  shown(rl: readline.Interface, output: NodeJS.WritableStream): void {
    this.prompt = { rl, output };
  }

  /** The prompt is gone (a line was entered, the console closed). */
  hidden(): void {
    this.prompt = null;
  }

  aroundWrite(write: () => void): void {
    if (this.prompt === null) return write();
    const { rl, output } = this.prompt;
    readline.clearLine(output, 0);
    readline.cursorTo(output, 0);
    write();
    rl.prompt(true);
  }
}
