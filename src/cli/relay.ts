#!/usr/bin/env node
// Entry point of `relay`. Parses the command line, runs the command, maps failures to exit
// codes (0 ok, 1 runtime, 2 usage/config) with one readable line on stderr.
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parseHost, parseHostPort, type ParseResult } from '../config/address.js';
import type { WhiteOverrides } from '../config/types.js';
import { ErrorCodes, exitCodeFor, RelayError } from '../errors.js';
import { COMMAND_USAGE, RELAY_USAGE } from './usage.js';
import { VERSION } from '../version.js';

async function main(argv: string[]): Promise<number | null> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(RELAY_USAGE);
    return command ? 0 : 2;
  }
  if (command === '--version' || command === '-v') {
    process.stdout.write(await versionText());
    return 0;
  }
  const usage = COMMAND_USAGE[command];
  if (!usage) throw new RelayError(ErrorCodes.USAGE, `unknown command "${command}" (try relay --help)`);
  const { values } = parseArgsOrThrow(rest);
  if (values.help) {
    process.stdout.write(usage);
    return 0;
  }
  const config = values.config;
  const overrides = whiteOverrides(values);
  if (command !== 'white' && Object.keys(overrides).length > 0) {
    throw new RelayError(ErrorCodes.USAGE, `--bind, --control-listen, --admin-socket and --metrics-listen are for relay white only`);
  }
  switch (command) {
    case 'white':
      // The console is on when a person is at the terminal, unless told otherwise: a white
      // started in the background of an interactive shell must not read the terminal (SIGTTIN).
      await (await import('./run-white.js')).runWhite(requireConfig(config, command), {
        console: values['no-console'] === true ? false : values.console === true || process.stdin.isTTY === true,
        overrides,
      });
      return null; // keeps running until a signal
    case 'gray':
      await (await import('./run-gray.js')).runGray(requireConfig(config, command));
      return null;
    case 'demo':
      await (await import('./demo.js')).runDemo();
      return null;
    case 'verify': {
      const { verifyConfigFile } = await import('../config/load.js');
      const warnings: string[] = [];
      const result = await verifyConfigFile(requireConfig(config, command), { warnings });
      for (const warning of warnings) process.stderr.write(`warning: ${warning}\n`);
      if (result.ok) {
        process.stdout.write(`${config}: valid ${result.kind} config\n`);
        if (result.kind === 'white') {
          const { loadWhiteConfig } = await import('../config/load.js');
          const { ephemeralOverlap, ephemeralPortRange } = await import('../config/ports.js');
          const { portsRange } = await loadWhiteConfig(requireConfig(config, command));
          const overlap = portsRange ? ephemeralOverlap(portsRange, await ephemeralPortRange()) : null;
          if (overlap) process.stderr.write(`${config}: warning: ${overlap}\n`);
        }
        return 0;
      }
      process.stderr.write(`${result.errors.join('\n')}\n`);
      return 2;
    }
  }
  return 2;
}

/** The version, the protocol it speaks and the data plane this machine would run. */
async function versionText(): Promise<string> {
  const { PROTOCOL_VERSION } = await import('../engine/protocol/constants.js');
  const { openDataPlane } = await import('../engine/substrate/data-plane.js');
  const plane = openDataPlane();
  const detail = plane.engine ? plane.engine.modulePath : plane.note;
  return `relay ${VERSION}\nprotocol ${PROTOCOL_VERSION}\ndata plane ${plane.name}${detail ? ` (${detail})` : ''}\n`;
}

function parseArgsOrThrow(args: string[]) {
  try {
    return parseArgs({
      args,
      options: {
        config: { type: 'string', short: 'c' },
        console: { type: 'boolean' },
        'no-console': { type: 'boolean' },
        bind: { type: 'string' },
        'control-listen': { type: 'string' },
        'admin-socket': { type: 'string' },
        'metrics-listen': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    throw new RelayError(ErrorCodes.USAGE, (err as Error).message, { cause: err });
  }
}

/** The white's per-host flags, checked here so a typo is a usage error naming the flag. */
function whiteOverrides(values: Record<string, string | boolean | undefined>): WhiteOverrides {
  const text = (flag: string): string | undefined => {
    const v = values[flag];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v === '') throw new RelayError(ErrorCodes.USAGE, `--${flag} needs a value`);
    return v;
  };
  const check = (flag: string, v: string | undefined, parse: (t: string) => ParseResult<unknown>): string | undefined => {
    if (v === undefined) return undefined;
    const parsed = parse(v);
    if (!parsed.ok) throw new RelayError(ErrorCodes.USAGE, `--${flag} ${JSON.stringify(v)} ${parsed.reason}`);
    return v;
  };
  const bind = check('bind', text('bind'), parseHost);
  const controlListen = check('control-listen', text('control-listen'), parseHostPort);
  const metricsListen = check('metrics-listen', text('metrics-listen'), parseHostPort);
  const socket = text('admin-socket');
  return {
    ...(bind === undefined ? {} : { bind }),
    ...(controlListen === undefined ? {} : { controlListen }),
    // Relative to where the command runs, as any path on a command line.
    ...(socket === undefined ? {} : { adminSocket: resolve(socket) }),
    ...(metricsListen === undefined ? {} : { metricsListen }),
  };
}

function requireConfig(config: string | undefined, command: string): string {
  if (!config) throw new RelayError(ErrorCodes.USAGE, `relay ${command} needs --config FILE (see relay ${command} --help)`);
  return config;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== null) process.exitCode = code;
  },
  (err: unknown) => {
    const code = exitCodeFor(err);
    const text = err instanceof RelayError ? `${err.code}: ${err.message}` : err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`relay: ${text}\n`);
    process.exit(code);
  },
);
