// The package's public surface (package.json `exports`): start a white or a gray in this process
// from a file, an object with a file's keys, or a loaded config; read its state; stop it; and
// the config loaders. Nothing else is reachable by the package name. docs/api.md describes it.
export { startWhite, type RunningWhite, type WhiteListening, type WhiteState } from './api/white.js';
export { startGray, type RunningGray, type GrayState, type GrayWhiteState } from './api/gray.js';
export type { StartOptions } from './api/process.js';
export { loadWhiteConfig, loadGrayConfig, parseWhiteConfig, parseGrayConfig, whiteConfigFromObject, grayConfigFromObject, type ParseOptions } from './config/load.js';
export type { WhiteConfigInput, GrayConfigInput, WhiteGrayInput, HookInput, AuthorizeInput, SecretInput, LimitsInput, LogLevel } from './config/input.js';
export type { WhiteConfig, GrayConfig, GrayEntry, HostPort } from './config/types.js';
export { RelayError, ErrorCodes, isRelayError, type ErrorCode } from './errors.js';
export { VERSION } from './version.js';
