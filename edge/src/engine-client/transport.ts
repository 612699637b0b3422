/**
 * The little of NATS the engine tier needs, as an interface the engine client, the engine service and
 * discovery share. Implemented over the `nats` v2 package (Node: ./node-nats-transport) and over
 * `@nats-io/nats-core` (`wsconnect` in a Worker: ./nats-core-transport); both clients have the same
 * shape, so ./nats-adapter does the work once. Nothing here imports node:*.
 */

export interface TransportMsg {
  data: Uint8Array;
  subject: string;
  /** Where a reply goes (a request's inbox), if anywhere. */
  reply?: string;
  header(name: string): string | undefined;
}

export interface Subscription {
  unsubscribe(): void;
  /** Unsubscribes, but still delivers the messages the server routed here before it saw that. */
  drain(): Promise<void>;
}

/** Why a request got no reply: nobody subscribes to the subject, or nobody answered in time. */
export class TransportError extends Error {
  override name = 'TransportError';
  constructor(
    readonly kind: 'no-responders' | 'timeout',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface EngineTransport {
  /** A fresh subject under this connection's inbox prefix (what NATS permissions let it subscribe to). */
  inbox(): string;
  /** The server's max_payload in bytes. */
  maxPayload(): number;
  publish(subject: string, data: Uint8Array, opts?: { headers?: Record<string, string>; reply?: string }): void;
  /** `queue`: join that queue group (each message goes to one member). */
  subscribe(subject: string, onMsg: (msg: TransportMsg) => void, opts?: { queue?: string }): Subscription;
  /** Throws TransportError for no responders and timeouts. */
  request(subject: string, data: Uint8Array, opts: { timeoutMs: number; headers?: Record<string, string> }): Promise<TransportMsg>;
  /** Resolves once the server has seen everything published so far. */
  flush(): Promise<void>;
}
