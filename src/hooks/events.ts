// The fixed list of events relay reports. The engine emits them through an EventSink; webhook
// delivery (src/hooks/) and logs consume them. Emitting never blocks and never throws.

export const EVENT_NAMES = [
  'gray.connected',
  'gray.disconnected',
  'gray.auth_failed',
  'client.connected',
  'client.disconnected',
  'config.reloaded',
  'config.rejected',
] as const;

export type EventName = (typeof EVENT_NAMES)[number];

export interface EventPayloads {
  'gray.connected': { grayId: string; remoteAddress: string; sessionId: string };
  'gray.disconnected': { grayId: string; remoteAddress: string; sessionId: string; reason: string };
  'gray.auth_failed': { grayId: string; remoteAddress: string };
  'client.connected': { grayId: string; service: string; connectionId: string; clientAddress: string };
  'client.disconnected': {
    grayId: string;
    service: string;
    connectionId: string;
    clientAddress: string;
    bytesFromClient: number;
    bytesToClient: number;
    durationMs: number;
    reason: string;
  };
  'config.reloaded': { path: string; added: string[]; removed: string[]; changed: string[] };
  'config.rejected': { path: string; error: string };
}

export interface EventSink {
  emit<E extends EventName>(name: E, payload: EventPayloads[E]): void;
  /** Whether an event of this name would reach anyone now, so an emitter of one event per client
   *  builds its payload only when it would (absent: every event is taken). */
  wants?(name: EventName): boolean;
}

export const NULL_EVENT_SINK: EventSink = { emit() {}, wants: () => false };
