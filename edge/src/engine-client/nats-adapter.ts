/**
 * EngineTransport over a NATS client connection. `nats` v2 and `@nats-io/nats-core` v3 share this shape
 * (publish / subscribe with a callback / request, header maps from a `headers()` factory) and differ in
 * their error classes, so each runtime's module passes its factories and an error classifier.
 */
import { TransportError, type EngineTransport, type TransportMsg } from './transport';

interface HeaderMap {
  get(name: string): string;
  set(name: string, value: string): void;
}

interface NatsMsgLike {
  subject: string;
  data: Uint8Array;
  reply?: string;
  headers?: { get(name: string): string };
}

/** The structural subset of `NatsConnection` used here (both packages' connections satisfy it). */
export interface NatsConnectionLike {
  info?: { max_payload: number };
  publish(subject: string, payload?: Uint8Array, opts?: { headers?: never; reply?: string }): void;
  subscribe(subject: string, opts?: { queue?: string; callback?: (err: Error | null, msg: never) => void }): { unsubscribe(): void; drain(): Promise<void> };
  request(subject: string, payload?: Uint8Array, opts?: { timeout: number; headers?: never }): Promise<unknown>;
  flush(): Promise<void>;
}

export interface NatsAdapterDeps {
  headers(): HeaderMap;
  createInbox(prefix?: string): string;
  /** The connection's inbox prefix (role permissions allow subscribing under it). */
  inboxPrefix?: string;
  /** Maps a request failure to no-responders / timeout, or null for anything else. */
  classify(err: unknown): TransportError['kind'] | null;
}

/** Default NATS max_payload, for a connection that has not received the server's INFO (it always has once connected). */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

export function natsAdapter(nc: NatsConnectionLike, deps: NatsAdapterDeps): EngineTransport {
  const toHeaders = (h: Record<string, string> | undefined) => {
    if (!h) return undefined;
    const out = deps.headers();
    for (const [k, v] of Object.entries(h)) out.set(k, v);
    return out as never;
  };
  const wrap = (m: NatsMsgLike): TransportMsg => ({
    data: m.data,
    subject: m.subject,
    ...(m.reply ? { reply: m.reply } : {}),
    header: (name) => m.headers?.get(name) || undefined,
  });
  return {
    inbox: () => deps.createInbox(deps.inboxPrefix),
    maxPayload: () => nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD,
    publish(subject, data, opts) {
      nc.publish(subject, data, { ...(opts?.headers ? { headers: toHeaders(opts.headers) } : {}), ...(opts?.reply ? { reply: opts.reply } : {}) });
    },
    subscribe(subject, onMsg, opts) {
      return nc.subscribe(subject, {
        ...(opts?.queue ? { queue: opts.queue } : {}),
        callback: ((err: Error | null, msg: NatsMsgLike) => {
          if (!err) onMsg(wrap(msg));
        }) as never,
      });
    },
    async request(subject, data, opts) {
      try {
        return wrap((await nc.request(subject, data, { timeout: opts.timeoutMs, ...(opts.headers ? { headers: toHeaders(opts.headers) } : {}) })) as NatsMsgLike);
      } catch (err) {
        const kind = deps.classify(err);
        if (!kind) throw err;
        throw new TransportError(kind, kind === 'timeout' ? `no reply on ${subject} within ${opts.timeoutMs} ms` : `nobody serves ${subject}`, { cause: err });
      }
    },
    flush: () => nc.flush(),
  };
}
