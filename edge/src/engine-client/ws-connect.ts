/**
 * The engine tier over NATS's WebSocket listener with `@nats-io/nats-core` (what a Worker can open: no TCP
 * sockets there). Joins as the edge role: replies land under `_INBOX.edge`, as the generated permissions expect.
 */
import { wsconnect, type ConnectionOptions } from '@nats-io/nats-core';
import { natsCoreTransport } from './nats-core-transport';
import type { EngineTransport } from './transport';

export interface EngineTierConnection {
  transport: EngineTransport;
  close(): Promise<void>;
}

/** `servers`: ws:// or wss:// URL(s); the rest as nats-core's ConnectionOptions (user/pass, token, authenticator). */
export async function connectEngineTierWs(servers: string | string[], opts: Omit<ConnectionOptions, 'servers' | 'inboxPrefix'> = {}): Promise<EngineTierConnection> {
  const inboxPrefix = '_INBOX.edge';
  const nc = await wsconnect({ servers, inboxPrefix, ...opts });
  return { transport: natsCoreTransport(nc, inboxPrefix), close: () => nc.drain() };
}
