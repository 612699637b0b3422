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
    return await connect({
      servers: url,
      name,
      maxReconnectAttempts: -1,
      ...auth,
      ...(opts.role ? { inboxPrefix: roleInboxPrefix(opts.role) } : {}),
    });
  } catch (err) {
    throw new Error(`cannot connect to NATS at ${url}: ${(err as Error).message}`, { cause: err });
  }
}
