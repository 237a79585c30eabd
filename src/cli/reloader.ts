// Keeps a running white in step with its file: load fully → validate → apply only the
// difference. An invalid file never replaces a running config: it is logged, counted, reported
// to hooks, and the next good save wins. Reloads are serialized: a save that lands during a
// reload triggers exactly one more.
import { loadWhiteConfigIsolated as loadWhiteConfig } from '../config/isolated-load.js';
import { diffWhiteConfigs } from '../config/diff.js';
import type { WhiteConfig, WhiteOverrides } from '../config/types.js';
import type { WhiteServer } from '../engine/white/white-server.js';
import type { WhiteHooks } from '../hooks/white-hooks.js';
import type { Logger } from '../log.js';
import { releaseMemory } from './release-memory.js';
import { SerialReload } from './serial-reload.js';

export class Reloader {
  // The load ran in a worker and the apply may have rebuilt much: give that back, unless another
  // reload follows at once.
  private readonly serial = new SerialReload(
    (why) => this.once(why),
    (more) => {
      if (!more) releaseMemory(this.server.dataPlane, this.logger, 'reload');
    },
  );

  constructor(
    private readonly path: string,
    private readonly server: WhiteServer,
    private readonly logger: Logger,
    private readonly hooks: WhiteHooks | null = null,
    /** Command-line settings that win over the file, on every reload as at start. */
    private readonly overrides: WhiteOverrides = {},
  ) {}

  run(why: string): Promise<void> {
    return this.serial.run(why);
  }

  private async once(why: string): Promise<void> {
    const counters = this.server.counters;
    let next: WhiteConfig;
    try {
      next = await loadWhiteConfig(this.path, { overrides: this.overrides });
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      counters.reloads.rejected += 1;
      counters.lastReload = { at: Date.now(), ok: false, error, notApplied: [] };
      this.logger.error({ why, path: this.path, code: (err as { code?: string }).code, error }, 'config rejected; the running config stays');
      this.hooks?.emit('config.rejected', { path: this.path, error });
      return;
    }
    try {
      const previous = this.server.currentConfig;
      const settings = diffWhiteConfigs(previous, next).globalChanged;
      const result = await this.server.applyConfig(next);
      // A webhook already delivering keeps the queue and attempt bounds it was made with.
      const hookLimits = [
        ['hookQueueLength', 'hook_queue_length'],
        ['hookMaxAttempts', 'hook_max_attempts'],
        ['hookResponseMaxBytes', 'hook_response_max_bytes'],
      ] as const;
      for (const [key, name] of hookLimits) {
        if (this.hooks && previous.hooks.length > 0 && previous.limits[key] !== next.limits[key]) {
          result.notApplied.push(`limits.${name}: webhooks already configured keep the value they started with; restart needed`);
        }
      }
      if (next.engine.threads !== previous.engine.threads) result.notApplied.push('engine.threads: the engine threads are started once; restart needed');
      if (next.log.level !== this.logger.level) {
        // The environment wins over the file, at start and at reload alike.
        if (process.env.RELAY_LOG_LEVEL) result.notApplied.push(`log.level: RELAY_LOG_LEVEL=${process.env.RELAY_LOG_LEVEL} is set and overrides the file`);
        else this.logger.level = next.log.level;
      }
      counters.reloads.ok += 1;
      counters.lastReload = { at: Date.now(), ok: true, error: null, notApplied: result.notApplied };
      this.hooks?.update(next);
      this.server.gatesChanged();
      // Never a plain success when part of the file is not in force: each part is named.
      for (const line of result.notApplied) this.logger.warn({ why, path: this.path, notApplied: line }, 'config setting not applied');
      this.logger[result.notApplied.length > 0 ? 'warn' : 'info']({ why, path: this.path, settings, ...result }, 'config reloaded');
      this.hooks?.emit('config.reloaded', { path: this.path, added: result.added, removed: result.removed, changed: result.changed });
    } catch (err) {
      // Not expected (a port that cannot be bound is retried, not thrown): say so; what was
      // applied stays applied, and the next save tries the rest again.
      const error = err instanceof Error ? err.message : String(err);
      counters.reloads.rejected += 1;
      counters.lastReload = { at: Date.now(), ok: false, error, notApplied: [] };
      this.logger.error({ why, path: this.path, error }, 'config reload failed while applying');
      this.hooks?.emit('config.rejected', { path: this.path, error });
    }
  }
}
