// What a reload has to do, computed from two loaded configs and nothing else (pure, so it is
// tested without sockets). Grays are matched by id; a gray whose ports or secret changed is
// "changed" (the engine decides whether that means new listeners, a forced re-login, or both).
import type { GrayEntry, WhiteConfig } from './types.js';

export interface GrayChange {
  readonly before: GrayEntry;
  readonly after: GrayEntry;
  readonly portsChanged: boolean;
  readonly secretChanged: boolean;
}

export interface WhiteConfigDiff {
  /** In the new config only, in its order. */
  readonly added: GrayEntry[];
  /** In the old config only, in its order. */
  readonly removed: GrayEntry[];
  readonly changed: GrayChange[];
  /** Ids present in both and identical. */
  readonly unchanged: string[];
  /** Names (WhiteConfig keys) of top-level settings that differ, e.g. ['limits', 'hooks']. */
  readonly globalChanged: string[];
}

/** Settings compared for globalChanged; `grays` is diffed per entry and `path` is not a setting. */
const GLOBAL_KEYS = ['control', 'bind', 'admin', 'portsRange', 'dataSourceCheck', 'clientKeepAlive', 'hooks', 'authorize', 'metrics', 'dashboard', 'log', 'engine', 'watch', 'limits'] as const satisfies ReadonlyArray<
  Exclude<keyof WhiteConfig, 'grays' | 'path'>
>;

export function diffWhiteConfigs(oldConfig: WhiteConfig, newConfig: WhiteConfig): WhiteConfigDiff {
  const before = new Map(oldConfig.grays.map((g) => [g.id, g]));
  const after = new Set(newConfig.grays.map((g) => g.id));
  const added: GrayEntry[] = [];
  const changed: GrayChange[] = [];
  const unchanged: string[] = [];
  for (const g of newConfig.grays) {
    const old = before.get(g.id);
    if (old === undefined) {
      added.push(g);
      continue;
    }
    const publicPorts = (e: GrayEntry): number[] => e.services.map((s) => s.publicPort);
    const portsChanged = !deepEqual(publicPorts(old), publicPorts(g)) || old.dataPort !== g.dataPort;
    const secretChanged = !old.secret.equals(g.secret);
    const settingsChanged = (old.idleTimeoutMs ?? null) !== (g.idleTimeoutMs ?? null) || !deepEqual(old.services, g.services);
    if (portsChanged || secretChanged || settingsChanged) changed.push({ before: old, after: g, portsChanged, secretChanged });
    else unchanged.push(g.id);
  }
  const removed = oldConfig.grays.filter((g) => !after.has(g.id));
  const globalChanged = GLOBAL_KEYS.filter((k) => !deepEqual(oldConfig[k], newConfig[k]));
  return { added, removed, changed, unchanged, globalChanged };
}

/** Structural equality over config values: plain objects, arrays, Buffers (secrets) and primitives. */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Buffer.isBuffer(a) || Buffer.isBuffer(b)) return Buffer.isBuffer(a) && Buffer.isBuffer(b) && a.equals(b);
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}
