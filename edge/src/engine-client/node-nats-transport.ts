/** EngineTransport over the `nats` v2 package (the Node edge and the engine service). */
import { createInbox, ErrorCode, headers, type NatsConnection, type NatsError } from 'nats';
import { natsAdapter, type NatsConnectionLike } from './nats-adapter';
import type { EngineTransport } from './transport';

/** `inboxPrefix`: the one the connection was opened with (connectNats sets the role's). */
export function nodeNatsTransport(nc: NatsConnection, inboxPrefix?: string): EngineTransport {
  return natsAdapter(nc as unknown as NatsConnectionLike, {
    headers: () => headers(),
    createInbox,
    ...(inboxPrefix ? { inboxPrefix } : {}),
    classify: (err) => {
      const code = (err as NatsError)?.code;
      if (code === ErrorCode.NoResponders) return 'no-responders';
      if (code === ErrorCode.Timeout) return 'timeout';
      return null;
    },
  });
}
