// Keeps a running gray in step with its file, as reloader.ts does for the white: load fully →
// validate → apply. Services (targets, PROXY settings, added or removed ones) apply to the next
// client without a reconnect; a changed white, id or secret starts the sessions again. An
// invalid file is logged and the running config stays. Reloads are serialized: a save that
// lands during one triggers exactly one more.
import { loadGrayConfigIsolated as loadGrayConfig } from '../config/isolated-load.js';
import type { GrayConfig } from '../config/types.js';
import type { WhiteSessions } from '../engine/gray/white-sessions.js';
import type { Logger } from '../log.js';
import { SerialReload } from './serial-reload.js';

export class GrayReloader {
  private readonly serial = new SerialReload((why) => this.once(why));

  constructor(
    private readonly path: string,
    private readonly sessions: WhiteSessions,
    private readonly logger: Logger,
    /** engine.threads as the process started (the threads start once). */
    private readonly startedThreads: number | null = null,
  ) {}

  run(why: string): Promise<void> {
    return this.serial.run(why);
  }

  private async once(why: string): Promise<void> {
    let next: GrayConfig;
    try {
      next = await loadGrayConfig(this.path);
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      this.logger.error({ why, path: this.path, code: (err as { code?: string }).code, error }, 'config rejected; the running config stays');
      return;
    }
    try {
      const done = await this.sessions.applyConfig(next);
      if (next.log.level !== this.logger.level && !process.env.RELAY_LOG_LEVEL) this.logger.level = next.log.level;
      if (next.engine.threads !== this.startedThreads) this.logger.warn({ why, path: this.path, notApplied: 'engine.threads: the engine threads are started once; restart needed' }, 'config setting not applied');
      this.logger.info({ why, path: this.path, applied: done, services: next.services.map((s) => s.name) }, 'config reloaded');
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      this.logger.error({ why, path: this.path, error }, 'config reload failed while applying; the running services stay');
    }
  }
}
