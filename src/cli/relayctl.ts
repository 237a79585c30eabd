#!/usr/bin/env node
// Entry point of `relayctl`: add/delete edit the white's file, show/reload talk to the running
// white over its admin API. Exit codes: 0 ok, 1 runtime failure (the white is not running...),
// 2 usage or config error. Failures are one plain sentence on stderr.
import { open, unlink, type FileHandle } from 'node:fs/promises';
import type { AdminTarget } from '../admin/client.js';
import { ErrorCodes, exitCodeFor, RelayError } from '../errors.js';
import {
  ADD_OPTIONS,
  addArgsFrom,
  addCommand,
  adminTargetFor,
  defaultConfigPath,
  deleteCommand,
  onePositional,
  parseCommandArgs,
  renderShow,
  serviceCommand,
  SERVICE_OPTIONS,
  showJson,
  type ArgOptions,
} from './commands.js';
import { RELAYCTL_COMMAND_USAGE, RELAYCTL_USAGE } from './relayctl-usage.js';
import { VERSION } from '../version.js';

const COMMON: ArgOptions = {
  config: { type: 'string', short: 'c' },
  help: { type: 'boolean', short: 'h' },
};

const OPTIONS: Record<string, ArgOptions> = {
  add: { ...COMMON, ...ADD_OPTIONS, out: { type: 'string', short: 'o' } },
  delete: COMMON,
  service: { ...COMMON, ...SERVICE_OPTIONS },
  show: { ...COMMON, json: { type: 'boolean' }, socket: { type: 'string' }, timeout: { type: 'string' } },
  reload: { ...COMMON, socket: { type: 'string' }, timeout: { type: 'string' } },
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(RELAYCTL_USAGE);
    return command ? 0 : 2;
  }
  if (command === '--version' || command === '-v') {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const options = OPTIONS[command];
  const usage = RELAYCTL_COMMAND_USAGE[command];
  if (!options || !usage) throw new RelayError(ErrorCodes.USAGE, `unknown command "${command}" (try relayctl --help)`);
  const parsed = parseCommandArgs(rest, options);
  const { values, positionals } = parsed;
  if (values.help === true) {
    process.stdout.write(usage);
    return 0;
  }
  const config = typeof values.config === 'string' ? values.config : defaultConfigPath();
  const str = (name: string): string | undefined => (typeof values[name] === 'string' ? (values[name] as string) : undefined);

  switch (command) {
    case 'add': {
      const args = addArgsFrom(parsed, 'relayctl add');
      const out = str('out');
      // Created before the white's file is edited, so an existing file or a wrong folder costs nothing.
      const outFile = out === undefined ? null : await createPrivateFile(out);
      let outcome;
      try {
        outcome = await addCommand(config, args);
      } catch (err) {
        await outFile?.discard();
        throw err;
      }
      if (outFile === null) process.stdout.write(outcome.grayYaml);
      else await outFile.write(outcome.grayYaml);
      // Said only once the running white has the gray, so a gray started right after this
      // command is known when it logs in.
      const applied = await askWhiteToApply(config, outcome.entry.id);
      process.stderr.write(`${outcome.summary}; ${applied}\n`);
      if (outFile !== null) process.stderr.write(`wrote the gray's config to ${outFile.path} (mode 0600: it holds the secret)\n`);
      for (const w of outcome.warnings) process.stderr.write(`warning: ${w}\n`);
      return 0;
    }
    case 'service': {
      const summary = await serviceCommand(config, parsed);
      const applied = await askWhiteToApply(config, positionals[1]!);
      process.stderr.write(`${summary}; ${applied}\n`);
      return 0;
    }
    case 'delete': {
      const outcome = await deleteCommand(config, onePositional(positionals, 'relayctl delete'));
      process.stderr.write(`${outcome.summary}\n`);
      return 0;
    }
    case 'show':
    case 'reload': {
      noPositionals(positionals, command);
      const socket = str('socket');
      const target: AdminTarget = socket !== undefined ? { socket } : await adminTargetFor(config);
      // Loaded here: add and delete never talk HTTP, and a short-lived CLI feels its imports.
      const { AdminClient } = await import('../admin/client.js');
      const timeout = str('timeout');
      const timeoutMs = timeout === undefined ? undefined : secondsOption('--timeout', timeout);
      const client = new AdminClient(target, timeoutMs === undefined ? {} : { timeoutMs, reloadTimeoutMs: timeoutMs });
      try {
        if (command === 'show') {
          const state = await client.state();
          process.stdout.write(values.json === true ? showJson(state) : renderShow(state));
          return 0;
        }
        const outcome = await client.reload();
        if (outcome.ok && (outcome.notApplied ?? []).length === 0) {
          process.stderr.write('reloaded: the white runs the file as it is now\n');
          return 0;
        }
        if (outcome.ok) {
          process.stderr.write(`reloaded, but not all of it is in force:\n${(outcome.notApplied ?? []).map((l) => `  ${l}\n`).join('')}`);
          return 1;
        }
        process.stderr.write(`reload rejected; the running config stays:\n${outcome.error ?? ''}\n`);
        return 2;
      } finally {
        await client.close();
      }
    }
  }
  return 2;
}

/** How long relayctl add waits for the running white to apply the edit. */
const APPLY_WAIT_MS = 15_000;

/** Asks the running white to reload now (admin API) and says how that went, in a few words. */
async function askWhiteToApply(config: string, id: string): Promise<string> {
  let target: AdminTarget;
  try {
    target = await adminTargetFor(config);
  } catch {
    return 'the white applies it on its next reload (no admin API configured to ask it now)';
  }
  const { AdminClient } = await import('../admin/client.js');
  const client = new AdminClient(target, { timeoutMs: APPLY_WAIT_MS, reloadTimeoutMs: APPLY_WAIT_MS });
  try {
    const outcome = await client.reload();
    if (!outcome.ok) return `the running white did not apply the file: ${outcome.error ?? 'no reason given'}`;
    const mine = (outcome.notApplied ?? []).filter((line) => line.startsWith(`grays[${id}]`));
    return mine.length > 0 ? `the running white has it, but ${mine.join('; ')}` : 'the running white has applied it';
  } catch (err) {
    if (err instanceof RelayError && err.code === ErrorCodes.ADMIN_UNREACHABLE) return 'the white is not running; it applies the file when it starts';
    return `could not ask the running white to apply it now (${err instanceof Error ? err.message : String(err)}); it applies the save on its next reload`;
  } finally {
    await client.close().catch(() => {});
  }
}

function secondsOption(flag: string, text: string): number {
  const seconds = /^[0-9]+(\.[0-9]+)?$/.test(text) ? Number(text) : NaN;
  if (!(seconds > 0 && seconds <= 3600)) throw new RelayError(ErrorCodes.USAGE, `${flag} ${JSON.stringify(text)} is not a number of seconds in (0, 3600]`);
  return Math.round(seconds * 1000);
}

interface PrivateFile {
  readonly path: string;
  write(text: string): Promise<void>;
  discard(): Promise<void>;
}

/** A new file only its owner may read; an existing one is never touched (O_EXCL). */
async function createPrivateFile(path: string): Promise<PrivateFile> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'wx', 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    const why = code === 'EEXIST' ? 'already exists; relayctl add never overwrites a file: pick another name or remove it first' : `cannot be created (${code})`;
    throw new RelayError(ErrorCodes.USAGE, `--out ${path} ${why}`, { cause: err });
  }
  return {
    path,
    write: async (text) => {
      try {
        // The umask can only take bits away; this makes 0600 exact whatever it is.
        await handle.chmod(0o600);
        await handle.writeFile(text, 'utf8');
        await handle.sync();
      } finally {
        await handle.close();
      }
    },
    discard: async () => {
      await handle.close();
      await unlink(path).catch(() => {});
    },
  };
}

function noPositionals(positionals: string[], command: string): void {
  if (positionals.length > 0) {
    throw new RelayError(ErrorCodes.USAGE, `relayctl ${command} takes no arguments, got ${JSON.stringify(positionals[0])} (see relayctl ${command} --help)`);
  }
}

// `relayctl show | head -1` closes the pipe early: the reader has what it wanted, not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.exit(process.exitCode ?? 0);
});

// The command's outcome decides the exit code. Should a promise ever be left unsettled (a library
// that drops a callback), the process would run out of work and exit 0 as if all went well:
// report that as the failure it is instead.
let ended = false;
process.once('beforeExit', () => {
  if (ended) return;
  process.stderr.write('relayctl: the command ended without an outcome (an internal error): treat it as failed\n');
  process.exitCode = 1;
});

main(process.argv.slice(2)).then(
  (code) => {
    ended = true;
    process.exitCode = code;
  },
  (err: unknown) => {
    ended = true;
    const text = err instanceof RelayError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`relayctl: ${text}\n`);
    process.exitCode = exitCodeFor(err);
  },
);
