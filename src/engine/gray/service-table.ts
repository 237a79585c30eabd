// The gray's service table for one white session: which service each index of a start header
// means. The gray gives the indexes out (it announces the table in SERVICES), so a header never
// carries an index the gray did not define. Within a session a position keeps its service: a
// removed service leaves its position empty and an added one takes a new position, so a header
// written just before a reload cannot reach another service. A new session starts a fresh table.
import type { GrayService } from '../../config/types.js';
import { SERVICE_SLOTS_MAX } from '../protocol/constants.js';

export interface TableChange {
  readonly added: string[];
  readonly removed: string[];
  /** Same name, another target or PROXY setting. */
  readonly changed: string[];
}

export class ServiceTable {
  /** Names by position; '' where a removed service was. */
  private readonly slots: string[] = [];
  private readonly byName = new Map<string, GrayService>();

  constructor(services: readonly GrayService[]) {
    for (const s of services) {
      this.slots.push(s.name);
      this.byName.set(s.name, s);
    }
  }

  /** The table as SERVICES carries it. */
  wire(): string {
    return this.slots.join(',');
  }

  /** The service at a header's index, or undefined (never given out, or removed). */
  at(index: number): GrayService | undefined {
    const name = this.slots[index];
    return name ? this.byName.get(name) : undefined;
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  /** Positions with their services ('' positions as undefined), for the engine's routes. */
  positions(): Array<GrayService | undefined> {
    return this.slots.map((name) => (name ? this.byName.get(name) : undefined));
  }

  /** Whether update(services) fits in this session's table (a new name takes a new position). */
  fits(services: readonly GrayService[]): boolean {
    const fresh = services.filter((s) => !this.slots.includes(s.name)).length;
    return this.slots.length + fresh <= SERVICE_SLOTS_MAX;
  }

  /** Applies a reloaded file's services; call fits() first. */
  update(services: readonly GrayService[]): TableChange {
    const next = new Map(services.map((s) => [s.name, s]));
    const change: TableChange = { added: [], removed: [], changed: [] };
    for (const [i, name] of this.slots.entries()) {
      if (name && !next.has(name)) {
        this.slots[i] = '';
        this.byName.delete(name);
        change.removed.push(name);
      }
    }
    for (const s of services) {
      const old = this.byName.get(s.name);
      if (old === undefined) {
        this.slots.push(s.name);
        change.added.push(s.name);
      } else if (old.target.host !== s.target.host || old.target.port !== s.target.port || old.proxyProtocol !== s.proxyProtocol) {
        change.changed.push(s.name);
      }
      this.byName.set(s.name, s);
    }
    return change;
  }
}

/** Names in a but not in b. */
export function missingFrom(a: readonly string[], b: readonly string[]): string[] {
  const have = new Set(b);
  return a.filter((n) => n !== '' && !have.has(n));
}
