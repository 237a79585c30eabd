// A stand-in for the relay CLI, used only to test the harness's relay column, scale mode and
// profile mode before the real engine exists (`--relay-cli dist/bench/mock-relay.js`).
// It speaks the same CLI contract (white/gray subcommands, the same YAML keys, the same
// "listening" and "pool ready" log lines) and the same topology (pooled data connections opened
// by the gray), but has NO authentication, NO TLS and no limits: its numbers say what a plain
// pipe()-based Node tunnel does, never what relay does. Never report them as relay's.
import fs from 'node:fs';
import net from 'node:net';
import { parse } from 'yaml';

const log = (msg: string, extra: Record<string, unknown> = {}): void => {
  process.stdout.write(JSON.stringify({ level: 30, time: Date.now(), name: 'mock-relay', msg, ...extra }) + '\n');
};

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

/** Pipe both ways with half-close kept, and tear the pair down once when either side fails. */
function join(a: net.Socket, b: net.Socket): void {
  const kill = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', kill);
  b.on('error', kill);
  // One side fully closed: nothing can reach it any more; flush what is queued to the other, then drop it.
  a.on('close', () => b.destroySoon());
  b.on('close', () => a.destroySoon());
  a.pipe(b);
  b.pipe(a);
}

function white(cfgPath: string): void {
  const cfg = parse(fs.readFileSync(cfgPath, 'utf8')) as {
    control: { listen: string };
    grays: { id: string; public_port: number; data_port: number }[];
  };
  const control = hostPort(cfg.control.listen);
  const ports = new Map<string, number>();
  let pending = 1 + cfg.grays.length * 2;
  const up = (): void => {
    if (--pending === 0) log('listening', { grays: cfg.grays.length });
  };
  for (const g of cfg.grays) {
    ports.set(g.id, g.data_port);
    const idle: net.Socket[] = [];
    const waiting: net.Socket[] = [];
    const pair = (client: net.Socket, data: net.Socket): void => {
      data.removeAllListeners('close');
      data.removeAllListeners('error');
      data.write('S'); // start header: tells the gray to dial its target
      client.resume();
      join(client, data);
    };
    net
      .createServer({ allowHalfOpen: true, noDelay: true }, (data) => {
        data.setNoDelay(true);
        const client = waiting.shift();
        if (client) return pair(client, data);
        idle.push(data);
        data.on('error', () => data.destroy());
        data.on('close', () => {
          const i = idle.indexOf(data);
          if (i >= 0) idle.splice(i, 1);
        });
      })
      .listen({ host: control.host, port: g.data_port, backlog: 4096 }, up);
    net
      .createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (client) => {
        client.setNoDelay(true);
        const data = idle.shift();
        if (data) return pair(client, data);
        client.on('error', () => client.destroy());
        waiting.push(client);
      })
      .listen({ host: control.host, port: g.public_port, backlog: 4096 }, up);
  }
  // Control: the gray sends its id and a newline, the white answers with the data port.
  net
    .createServer((sock) => {
      sock.setEncoding('utf8');
      let buf = '';
      sock.on('error', () => sock.destroy());
      sock.on('data', (s: string) => {
        buf += s;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        const port = ports.get(buf.slice(0, nl));
        if (port === undefined) sock.destroy();
        else sock.write(`${port}\n`);
      });
    })
    .listen({ host: control.host, port: control.port }, up);
}

function gray(cfgPath: string): void {
  const cfg = parse(fs.readFileSync(cfgPath, 'utf8')) as { white: string; id: string; target: string; pool: number };
  const whiteAddr = hostPort(cfg.white);
  const target = hostPort(cfg.target);
  const ctl = net.connect(whiteAddr);
  ctl.setEncoding('utf8');
  let buf = '';
  ctl.on('data', (s: string) => {
    buf += s;
    const nl = buf.indexOf('\n');
    if (nl >= 0 && buf.length > 0) startPool(Number(buf.slice(0, nl)));
  });
  ctl.on('connect', () => ctl.write(`${cfg.id}\n`));
  ctl.on('error', (e) => {
    log('control failed', { err: e.message });
    process.exit(1);
  });
  let started = false;
  function startPool(dataPort: number): void {
    if (started) return;
    started = true;
    let ready = 0;
    const open = (): void => {
      const data = net.connect({ host: whiteAddr.host, port: dataPort, allowHalfOpen: true, noDelay: true });
      data.on('error', () => data.destroy());
      data.once('connect', () => {
        if (++ready === cfg.pool) log('pool ready', { pool: cfg.pool });
      });
      data.once('data', (first: Buffer) => {
        open(); // replace the consumed connection at once
        data.pause();
        const svc = net.connect({ ...target, allowHalfOpen: true, noDelay: true });
        const rest = first.subarray(1);
        if (rest.length > 0) svc.write(rest);
        join(data, svc);
        data.resume();
      });
    };
    for (let i = 0; i < cfg.pool; i++) open();
  }
}

const [cmd, flag, file] = process.argv.slice(2);
if ((cmd !== 'white' && cmd !== 'gray') || flag !== '--config' || !file) {
  process.stderr.write('usage: mock-relay white|gray --config FILE\n');
  process.exit(2);
}
// Exit normally on SIGTERM/SIGINT so --cpu-prof gets to write its profile.
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
if (cmd === 'white') white(file);
else gray(file);
