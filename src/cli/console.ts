// The white's own console (`relay white --console`, or stdin is a terminal): /add, /delete, /service, /show,
// /quit, /help typed on stdin. It runs the same code as relayctl (commands.ts): /add and /delete edit the
// file and the white applies the edit through its hot reload, exactly as for any other save, so
// the file stays the one source of truth. Output goes to stderr: stdout carries the JSON log.
import readline from 'node:readline';
import type { AdminState } from '../admin/server.js';
import { isRelayError } from '../errors.js';
import type { PromptGuard } from './prompt-guard.js';
import { ADD_OPTIONS, addArgsFrom, addCommand, deleteCommand, onePositional, parseCommandArgs, renderShow, SERVICE_OPTIONS, serviceCommand, showJson } from './commands.js';

export interface ConsoleOptions {
  readonly configPath: string;
  readonly state: () => AdminState;
  readonly input: NodeJS.ReadableStream & { isTTY?: boolean };
  readonly output: NodeJS.WritableStream;
  /** Ctrl-C at the prompt: readline takes the keystroke, so the caller decides what it means. */
  readonly onInterrupt?: () => void;
  /** `/quit`: stop the white. Without it, /quit only ends the console. */
  readonly onQuit?: () => void;
  /** Given to the logger writing on the same terminal, so log lines step around the prompt. */
  readonly guard?: PromptGuard;
}

export interface WhiteConsole {
  close(): void;
}

export const CONSOLE_HELP = `commands:
  /add <id> [--public-port N] [--data-port N] [--white host:port] [--target host:port | --service name=host:port ...]
                  register a gray in the config file; prints its gray.yaml (with its secret)
  /delete <id>    remove a gray from the config file (its ports and clients are closed)
  /service add|delete <gray> <name> [--allow CIDR]... [--public-port N]
                  add or remove a service of a gray in the config file
  /show [--json]  live state: grays, clients, bytes, last reload, hooks
  /quit           stop the white (as Ctrl-C: active clients get the drain time)
  /help           this text
Edits go through the config file; the white applies them on its hot reload.
`;

export function startConsole(options: ConsoleOptions): WhiteConsole {
  const { output } = options;
  const terminal = options.input.isTTY === true;
  const rl = readline.createInterface({ input: options.input, output, terminal, historySize: terminal ? 100 : 0 });
  rl.setPrompt('relay> ');
  const write = (text: string): void => {
    output.write(text.endsWith('\n') ? text : `${text}\n`);
  };
  const prompt = (): void => {
    if (closed || !terminal) return;
    rl.prompt();
    options.guard?.shown(rl, output);
  };
  let closed = false;
  rl.once('close', () => {
    closed = true;
    options.guard?.hidden();
  });
  if (terminal) write('console ready; type /help');
  prompt();

  // One command at a time, in the order typed, so outputs never interleave.
  let queue: Promise<void> = Promise.resolve();
  rl.on('line', (line) => {
    options.guard?.hidden();
    if (/^\s*\/(quit|exit)\s*$/.test(line)) {
      write('stopping');
      rl.close();
      options.onQuit?.();
      return;
    }
    queue = queue
      .then(() => runLine(line, options, write))
      .catch((err: unknown) => write(`error: ${isRelayError(err) || err instanceof Error ? err.message : String(err)}`))
      .then(prompt);
  });
  rl.on('SIGINT', () => {
    if (options.onInterrupt) options.onInterrupt();
    else rl.close();
  });
  return {
    close: () => rl.close(),
  };
}

async function runLine(line: string, options: ConsoleOptions, write: (text: string) => void): Promise<void> {
  const words = line.trim().split(/\s+/).filter((w) => w !== '');
  const [command, ...args] = words;
  if (command === undefined) return;
  switch (command) {
    case '/help':
    case '/?':
      return write(CONSOLE_HELP);
    case '/show': {
      const { values } = parseCommandArgs(args, { json: { type: 'boolean' } });
      const state = options.state();
      return write(values.json === true ? showJson(state) : renderShow(state));
    }
    case '/add': {
      const outcome = await addCommand(options.configPath, addArgsFrom(parseCommandArgs(args, ADD_OPTIONS), '/add'));
      // The white running this console sees the save through its watcher, like any other.
      write(`${outcome.summary}; this white applies it on its reload`);
      for (const w of outcome.warnings) write(`warning: ${w}`);
      write(`----- gray.yaml for "${outcome.entry.id}" (keep it private: it holds the secret) -----`);
      write(outcome.grayYaml);
      return write('-----');
    }
    case '/service':
      return write(`${await serviceCommand(options.configPath, parseCommandArgs(args, SERVICE_OPTIONS))}; this white applies it on its reload`);
    case '/delete': {
      const { positionals } = parseCommandArgs(args, {});
      return write((await deleteCommand(options.configPath, onePositional(positionals, '/delete'))).summary);
    }
    default:
      if (!command.startsWith('/')) return write(`commands start with "/": /add, /delete, /service, /show, /quit, /help (got ${JSON.stringify(command)})`);
      return write(`unknown command ${command}; type /help for the list`);
  }
}
