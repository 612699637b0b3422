/** One way to reach NATS for the edge and the workers: reconnect forever once up, a clear error if never up. */
import { connect, type NatsConnection } from 'nats';
import { natsAuthOptions, natsSecurityFromEnv, roleInboxPrefix, type NatsRole, type NatsSecurity } from './nats-auth';

export interface NatsConnectOptions {
  /** Sets the inbox prefix the generated per-role permissions expect (`unimoe nats-auth`). */
  role?: NatsRole;
  /** Credentials and TLS; default: from the environment (NATS_CREDS, NATS_NKEY_SEED, NATS_USER, ...). */
  security?: NatsSecurity;
}

export async function connectNats(url: string, name: string, opts: NatsConnectOptions = {}): Promise<NatsConnection> {
  const auth = natsAuthOptions(opts.security ?? natsSecurityFromEnv());
  try {
    // Reconnect attempts every 250 ms (+ up to 100 ms jitter) rather than the client's 2 s, so a NATS
    // restart costs in-flight steps about as long as the server is down.
    return await connect({
      servers: url,
      name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      reconnectJitter: 100,
      ...auth,
      ...(opts.role ? { inboxPrefix: roleInboxPrefix(opts.role) } : {}),
    });
  } catch (err) {
    throw new Error(`cannot connect to NATS at ${url}: ${(err as Error).message}`, { cause: err });
  }
}
