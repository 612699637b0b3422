/** EngineTransport over `@nats-io/nats-core` (e.g. a `wsconnect` connection in a Cloudflare Worker). */
import { createInbox, headers, RequestError, TimeoutError, type NatsConnection } from '@nats-io/nats-core';
import { natsAdapter, type NatsConnectionLike } from './nats-adapter';
import type { EngineTransport } from './transport';

/** `inboxPrefix`: the connection's own (`inboxPrefix` connect option), e.g. `_INBOX.edge` for the edge role. */
export function natsCoreTransport(nc: NatsConnection, inboxPrefix?: string): EngineTransport {
  return natsAdapter(nc as unknown as NatsConnectionLike, {
    headers: () => headers(),
    createInbox,
    ...(inboxPrefix ? { inboxPrefix } : {}),
    classify: (err) => {
      if (err instanceof RequestError && err.isNoResponders()) return 'no-responders';
      if (err instanceof TimeoutError || (err instanceof RequestError && err.cause instanceof TimeoutError)) return 'timeout';
      return null;
    },
  });
}
