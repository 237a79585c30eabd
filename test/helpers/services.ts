// Setting up a white and a gray with several services, on this process's data plane (tests).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type net from 'node:net';
import { parseCidr, type Cidr } from '../../src/engine/protocol/cidr.js';
import { GrayAgent } from '../../src/engine/gray/agent.js';
import { WhiteServer } from '../../src/engine/white/white-server.js';
import type { GrayService, WhiteConfig, WhiteService } from '../../src/config/types.js';
import { testDataPlane } from './data-plane.js';
import type { EventSink } from '../../src/hooks/events.js';
import { grayConfigFor, whiteConfigFor } from './tunnel.js';
import { captureLogger, type CapturedLogger } from '../soak/support.js';

export const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A service that answers, after the client's FIN, "B:" and the SHA-256 of what it sent. */
export const digestHandler = (socket: net.Socket): void => {
  const hash = createHash('sha256');
  socket.on('data', (c: Buffer) => hash.update(c));
  socket.on('end', () => socket.end(`B:${hash.digest('hex')}`));
  socket.on('error', () => socket.destroy());
};

export function cidrs(...texts: string[]): Cidr[] {
  return texts.map((t) => {
    const p = parseCidr(t);
    assert.ok(p.ok);
    return p.value;
  });
}

export interface Setup {
  /** Every event the white emitted (hooks see the same). */
  readonly events: Array<{ name: string; payload: Record<string, unknown> }>;
  readonly white: WhiteServer;
  readonly gray: GrayAgent;
  readonly whiteLog: CapturedLogger;
  readonly grayLog: CapturedLogger;
  port(service: string): number;
  stop(): Promise<void>;
}

export async function setupServices(whiteServices: WhiteService[], grayServices: GrayService[], extra: Partial<WhiteConfig> = {}): Promise<Setup> {
  const secret = randomBytes(32);
  const dataPlane = testDataPlane();
  const whiteLog = captureLogger('warn');
  const grayLog = captureLogger('warn');
  const events: Setup['events'] = [];
  const sink: EventSink = { emit: (name, payload) => void events.push({ name, payload: payload as unknown as Record<string, unknown> }) };
  const white = new WhiteServer(whiteConfigFor([{ id: 'nas', secret, dataPort: 0, services: whiteServices }], {}, extra), { dataPlane, logger: whiteLog.logger, events: sink });
  await white.start();
  const gray = new GrayAgent(grayConfigFor('nas', secret, white.controlPort, 1, { pool: 4, services: grayServices }), grayLog.logger, { dataPlane });
  const ready = new Promise<void>((resolve) => gray.once('pool-ready', () => resolve()));
  gray.start();
  await ready;
  return {
    events,
    white,
    gray,
    whiteLog,
    grayLog,
    port: (service) => white.portsOf('nas')!.publicPorts[service]!,
    async stop() {
      await gray.stop(100);
      await white.stop(100);
    },
  };
}

export const service = (name: string, port: number, proxyProtocol: GrayService['proxyProtocol'] = 'none'): GrayService => ({ name, target: { host: '127.0.0.1', port }, proxyProtocol });
export const publicOf = (name: string, allow: Cidr[] = []): WhiteService => ({ name, publicPort: 0, allow });
export const servicesOf = (s: Setup) => s.white.snapshot().grays[0]!.services!;

