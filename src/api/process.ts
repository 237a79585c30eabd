// What the embedding API shares across everything a program starts in one process: the data
// plane (one engine per process, opened at the first start), the loggers, and the step from
// what the caller gave (a path, an object with a file's keys, a loaded config) to a checked config.
// The loaders (YAML parser, ajv, the compiled schemas: about 10 MB once loaded) are imported only
// when a config is to be checked here: the CLI hands over a config its worker loaded
// (config/isolated-load.ts), and a long-running process should not carry them.
import { logDataPlane } from '../cli/data-plane-log.js';
import type { GrayConfigInput, WhiteConfigInput } from '../config/input.js';
import type { GrayConfig, WhiteConfig } from '../config/types.js';
import { openDataPlane, type DataPlane } from '../engine/substrate/data-plane.js';
import { ErrorCodes, RelayError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';

export interface StartOptions {
  /** Where the JSON log lines go (default stdout); the level is the config's log.level, or
   *  RELAY_LOG_LEVEL when set. */
  readonly logTo?: NodeJS.WritableStream;
}

let plane: DataPlane | null = null;

/** This process's data plane, as RELAY_DATA_PLANE says; opened (and logged) once, with the
 *  engine threads of the first config started (engine.threads). */
export function processDataPlane(logger: Logger, threads: number | null): DataPlane {
  if (plane === null) {
    plane = openDataPlane(threads ?? undefined);
    logDataPlane(logger, plane);
  }
  return plane;
}

export function libraryLogger(level: string, name: string, options: StartOptions): Logger {
  return createLogger({ level, name, ...(options.logTo ? { destination: options.logTo } : {}) });
}

type Kind = 'white' | 'gray';

function wrongKind(want: Kind, got: Kind): RelayError {
  return new RelayError(ErrorCodes.USAGE, `a ${got} config was given where a ${want} config is wanted`, { details: { want, got } });
}

/** A path is loaded, a loaded config is taken as it is, anything else is checked as a file's keys. */
export async function whiteFrom(source: string | WhiteConfigInput | WhiteConfig): Promise<WhiteConfig> {
  const { checkedKind, loadWhiteConfig, whiteConfigFromObject } = await import('../config/load.js');
  if (typeof source === 'string') return loadWhiteConfig(source);
  const kind = checkedKind(source);
  if (kind === 'gray') throw wrongKind('white', kind);
  return kind === 'white' ? (source as WhiteConfig) : whiteConfigFromObject(source as WhiteConfigInput);
}

export async function grayFrom(source: string | GrayConfigInput | GrayConfig): Promise<GrayConfig> {
  const { checkedKind, grayConfigFromObject, loadGrayConfig } = await import('../config/load.js');
  if (typeof source === 'string') return loadGrayConfig(source);
  const kind = checkedKind(source);
  if (kind === 'white') throw wrongKind('gray', kind);
  return kind === 'gray' ? (source as GrayConfig) : grayConfigFromObject(source as GrayConfigInput);
}
