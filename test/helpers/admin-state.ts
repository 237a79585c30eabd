// The admin state of a white with no grays, no hooks and nothing counted: what the admin server's
// tests serve when they exercise the transport, not the state.
import type { AdminState } from '../../src/admin/server.js';
import { VERSION } from '../../src/version.js';

export function emptyAdminState(): AdminState {
  return {
    configPath: null,
    startedAt: 0,
    grays: [],
    counters: { authFailures: 0, dataRejections: {}, controlRejections: {}, reloads: { ok: 0, rejected: 0 }, lastReload: null },
    hooks: [],
    version: VERSION,
  };
}
