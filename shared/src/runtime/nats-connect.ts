/** One way to reach NATS for the edge and the workers: reconnect forever once up, a clear error if never up. */
import { connect, type NatsConnection } from 'nats';

/** User/password from NATS_USER / NATS_PASSWORD (one NATS user per role, e.g. in infra/nats/nats.conf); none when unset. */
function credentialsFromEnv(): { user: string; pass: string } | Record<string, never> {
  const user = process.env.NATS_USER;
  return user ? { user, pass: process.env.NATS_PASSWORD ?? '' } : {};
}

export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  try {
    return await connect({ servers: url, name, maxReconnectAttempts: -1, ...credentialsFromEnv() });
  } catch (err) {
    throw new Error(`cannot connect to NATS at ${url}: ${(err as Error).message}`, { cause: err });
  }
}
