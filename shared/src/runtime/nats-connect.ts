/** One way to reach NATS for the edge and the workers: reconnect forever once up, a clear error if never up. */
import { connect, type NatsConnection } from 'nats';

export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  try {
    // Reconnect attempts every 250 ms (+ up to 100 ms jitter) rather than the client's 2 s, so a NATS
    // restart costs in-flight steps about as long as the server is down.
    return await connect({ servers: url, name, maxReconnectAttempts: -1, reconnectTimeWait: 250, reconnectJitter: 100 });
  } catch (err) {
    throw new Error(`cannot connect to NATS at ${url}: ${(err as Error).message}`, { cause: err });
  }
}
