// `relay demo` / `npm start`: the whole tunnel on loopback in one process — a small HTTP
// service, a white server and a gray agent — so a new user sees it work in seconds. Configs are
// built in code (no files written); ports are chosen by the OS; secrets are fresh each run.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { grayConfigInCode, whiteConfigInCode } from '../config/in-code.js';
import { GrayAgent } from '../engine/gray/agent.js';
import { openDataPlane } from '../engine/substrate/data-plane.js';
import { WhiteServer } from '../engine/white/white-server.js';
import { createLogger } from '../log.js';
import { onStopSignal } from './signals.js';

export interface DemoHandle {
  readonly publicPort: number;
  stop(): Promise<void>;
}

export async function startDemo(options: { logLevel?: string } = {}): Promise<DemoHandle> {
  const logger = createLogger({ level: options.logLevel ?? 'warn', name: 'demo' });
  const secret = randomBytes(32);
  const dataPlane = openDataPlane();

  const service = http.createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end(`hello from the service behind the gray: you asked for ${req.method} ${req.url}, from ${req.headers['x-forwarded-for'] ?? req.socket.remoteAddress}\n`);
  });
  await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
  const servicePort = (service.address() as AddressInfo).port;

  const whiteConfig = whiteConfigInCode([{ id: 'demo', secret, publicPort: 0, dataPort: 0 }]);
  const white = new WhiteServer(whiteConfig, { dataPlane, logger });
  await white.start();
  const ports = white.portsOf('demo')!;

  const grayConfig = grayConfigInCode('demo', secret, white.controlPort, servicePort);
  const gray = new GrayAgent(grayConfig, logger, { dataPlane });
  const ready = new Promise<void>((resolve) => gray.once('pool-ready', () => resolve()));
  gray.start();
  await ready;

  return {
    publicPort: ports.publicPort,
    async stop() {
      await gray.stop(1000);
      await white.stop(1000);
      await new Promise<void>((resolve) => service.close(() => resolve()));
    },
  };
}

export async function runDemo(): Promise<void> {
  const demo = await startDemo();
  process.stdout.write(
    [
      'relay demo is running on 127.0.0.1:',
      `  local service   an HTTP server (only the gray talks to it)`,
      `  white server    public port ${demo.publicPort}`,
      `  gray agent      connected over TLS, pool of 4 pre-opened data connections`,
      '',
      'Try it:',
      `  curl http://127.0.0.1:${demo.publicPort}/hello`,
      `  printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 ${demo.publicPort}`,
      '',
      'Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
  onStopSignal(async () => {
    process.stdout.write('stopping the demo...\n');
    await demo.stop();
  });
}
