// Keeps a running white in step with its file: load fully → validate → apply only the
// difference. An invalid file never replaces a running config: it is logged, counted, reported
// to hooks, and the next good save wins. Reloads are serialized: a save that lands during a
// reload triggers exactly one more.
import { loadWhiteConfigIsolated as loadWhiteConfig } from '../config/isolated-load.js';
import type { WhiteConfig, WhiteOverrides } from '../config/types.js';
import type { WhiteServer } from '../engine/white/white-server.js';
import type { WhiteHooks } from '../hooks/white-hooks.js';
import type { Logger } from '../log.js';
import { releaseMemory } from './release-memory.js';

export class Reloader {
  private running: Promise<void> | null = null;
  private again = false;

  constructor(
    private readonly path: string,
    private readonly server: WhiteServer,
    private readonly logger: Logger,
    private readonly hooks: WhiteHooks | null = null,
    /** Command-line settings that win over the file, on every reload as at start. */
    private readonly overrides: WhiteOverrides = {},
  ) {}

  run(why: string): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.once(why).finally(() => {
      this.running = null;
      // The load ran in a worker and the apply may have rebuilt much: give that back, unless
      // another reload follows at once.
      if (!this.again) releaseMemory(this.server.dataPlane, this.logger, 'reload');
      if (this.again) {
        this.again = false;
        void this.run('change during reload');
      }
    });
    return this.running;
  }

  private async once(why: string): Promise<void> {
    const counters = this.server.counters;
    let next: WhiteConfig;
    try {
      next = await loadWhiteConfig(this.path, { overrides: this.overrides });
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      counters.reloads.rejected += 1;
      counters.lastReload = { at: Date.now(), ok: false, error };
      this.logger.error({ why, path: this.path, code: (err as { code?: string }).code, error }, 'config rejected; the running config stays');
      this.hooks?.emit('config.rejected', { path: this.path, error });
      return;
    }
    try {
      const result = await this.server.applyConfig(next);
      counters.reloads.ok += 1;
      counters.lastReload = { at: Date.now(), ok: true, error: null };
      this.hooks?.update(next);
      this.server.gatesChanged();
      this.logger.info({ why, path: this.path, ...result }, 'config reloaded');
      this.hooks?.emit('config.reloaded', { path: this.path, ...result });
    } catch (err) {
      // Applying can fail half-way (a new port already taken by another program): say so; the
      // grays that were applied stay applied, the failed one is retried on the next save.
      const error = err instanceof Error ? err.message : String(err);
      counters.reloads.rejected += 1;
      counters.lastReload = { at: Date.now(), ok: false, error };
      this.logger.error({ why, path: this.path, error }, 'config reload failed while applying');
      this.hooks?.emit('config.rejected', { path: this.path, error });
    }
  }
}
