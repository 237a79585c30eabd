// A network namespace joined to this one by a veth pair, for e2e tests that need a link they can
// cut or kernel settings of their own (a namespace has its own net.ipv4 sysctls and ephemeral
// ports). Needs root and iproute2 (CI runs as root): without them create() throws, saying why,
// so such a test fails rather than skips.
import { execFileSync } from 'node:child_process';

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

export class LinkedNamespace {
  readonly name: string;
  readonly outside: string;
  readonly inside: string;
  /** This namespace's end of the link. */
  readonly hostIp: string;
  /** The namespace's end. */
  readonly nsIp: string;

  /** tag: a letter per test file; index: which of this process's namespaces (0 or 1), so they
   *  can run side by side. Names and addresses also carry the process id. */
  constructor(tag: string, index: number) {
    const id = `${tag}${process.pid % 100000}${index}`;
    this.name = `relay-${id}`;
    this.outside = `rlo${id}`;
    this.inside = `rli${id}`;
    const subnet = 200 + (tag.charCodeAt(0) % 50);
    const net = ((process.pid % 120) * 2 + index) + 1;
    this.hostIp = `10.${subnet}.${net}.1`;
    this.nsIp = `10.${subnet}.${net}.2`;
  }

  create(): void {
    if (process.getuid?.() !== 0) throw new Error('this test needs root: it creates a network namespace and a veth pair (CI runs as root)');
    try {
      ip('-V');
    } catch {
      throw new Error('this test needs iproute2 (`ip`) to create a network namespace and a veth pair');
    }
    this.remove(); // what a killed earlier run of this process id left behind
    ip('netns', 'add', this.name);
    ip('link', 'add', this.outside, 'type', 'veth', 'peer', 'name', this.inside);
    ip('link', 'set', this.inside, 'netns', this.name);
    ip('addr', 'add', `${this.hostIp}/30`, 'dev', this.outside);
    ip('link', 'set', this.outside, 'up');
    this.exec('ip', 'addr', 'add', `${this.nsIp}/30`, 'dev', this.inside);
    this.exec('ip', 'link', 'set', this.inside, 'up');
    this.exec('ip', 'link', 'set', 'lo', 'up');
  }

  /** Runs a command inside the namespace; its output. */
  exec(...command: string[]): string {
    return ip('netns', 'exec', this.name, ...command);
  }

  /** The namespace's network vanishes: its side of the link goes down. */
  cut(): void {
    this.exec('ip', 'link', 'set', this.inside, 'down');
  }

  remove(): void {
    for (const args of [['netns', 'del', this.name], ['link', 'del', this.outside]]) {
      try {
        ip(...args);
      } catch {
        // not there
      }
    }
  }
}
