// What went over the wire, segment by segment, as the kernel counts it for one of the test's own
// sockets (ss(8) from iproute2, which prints struct tcp_info), and a peer that sends bytes and its
// FIN in one segment (Python's socket module with TCP_CORK, which Node cannot set). Tests of
// how the engine packs its segments use these: a property no byte count shows.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Segments {
  /** Segments received, the handshake's included. */
  readonly in: number;
  /** Of those, the ones that carried bytes. */
  readonly dataIn: number;
}

/** The counts of the TCP socket on 127.0.0.1:localPort connected to remotePort, in any state. */
export async function segmentsOf(localPort: number, remotePort: number): Promise<Segments> {
  const { stdout } = await run('ss', ['-tinH', 'state', 'all', `( sport = :${localPort} and dport = :${remotePort} )`]);
  const field = (name: string): number => {
    const match = new RegExp(`(?:^|\\s)${name}:(\\d+)`).exec(stdout);
    if (!match) throw new Error(`ss printed no ${name} for 127.0.0.1:${localPort} -> ${remotePort}: ${JSON.stringify(stdout)}`);
    return Number(match[1]);
  };
  return { in: field('segs_in'), dataIn: field('data_segs_in') };
}

/** A process that connects to 127.0.0.1:port, sends `text` and its FIN corked into one segment,
 *  then reads until the other side's FIN and exits 0; it prints its local port first. */
export function corkedSender(port: number, text: string): { child: ChildProcess; localPort: Promise<number>; exited: Promise<number | null> } {
  const script = [
    'import socket, sys',
    `s = socket.create_connection(("127.0.0.1", ${port}))`,
    'print(s.getsockname()[1], flush=True)',
    's.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)',
    `s.sendall(${JSON.stringify(text)}.encode())`,
    's.shutdown(socket.SHUT_WR)',
    'while s.recv(65536): pass',
    's.close()',
  ].join('\n');
  const child = spawn('python3', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const localPort = new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim())));
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`python3 exited (${code}) before connecting`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, localPort, exited };
}
