/**
 * NATS from a Worker: the engine tier's websocket connection (connectEngineTierWs: @nats-io/nats-core
 * `wsconnect`, as the edge role), opened per use. Workers tie every I/O object (a WebSocket included) to
 * the request that created it, so one isolate cannot share a connection between requests: each
 * generation, grammar check and discovery opens its own and closes it when done (docs/workers.md).
 */
import { nkeyAuthenticator, type ConnectionOptions } from '@nats-io/nats-core';
import { unavailable } from '../api/errors';
import { connectEngineTierWs, type EngineTierConnection } from '../engine-client/ws-connect';
import type { EngineTransport } from '../engine-client/transport';
import type { WorkerEnv } from './env';

/** The `edge` role's credentials from the Worker's secrets (an nkey seed, user + password, or a token). */
export function natsOptions(env: WorkerEnv): Omit<ConnectionOptions, 'servers' | 'inboxPrefix'> {
  const given = (['NATS_NKEY_SEED', 'NATS_USER', 'NATS_TOKEN'] as const).filter((k) => env[k]);
  if (given.length > 1) throw new Error(`NATS credentials: give one of NATS_NKEY_SEED, NATS_USER/NATS_PASSWORD or NATS_TOKEN, not ${given.join(' and ')}`);
  if (env.NATS_PASSWORD && !env.NATS_USER) throw new Error('NATS credentials: NATS_PASSWORD needs NATS_USER');
  const seed = env.NATS_NKEY_SEED?.trim();
  if (seed && !/^SU[A-Z2-7]+$/.test(seed)) throw new Error('NATS_NKEY_SEED must be an nkey user seed (SU..., the content of the edge.nk file `unimoe nats-auth` writes)');
  return {
    name: 'unimoe-worker',
    // A request that loses its connection fails (the client retries); a reconnect would outlive it.
    reconnect: false,
    ...(env.NATS_USER ? { user: env.NATS_USER, pass: env.NATS_PASSWORD ?? '' } : {}),
    ...(env.NATS_TOKEN ? { token: env.NATS_TOKEN } : {}),
    ...(seed ? { authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)) } : {}),
  };
}

/** Runs `fn` over a fresh connection, closed when `fn` settles; an unreachable server is a 503. */
export async function withNats<T>(env: WorkerEnv, fn: (transport: EngineTransport) => Promise<T>): Promise<T> {
  const options = natsOptions(env);
  let conn: EngineTierConnection;
  try {
    conn = await connectEngineTierWs(env.NATS_WS_URL, options);
  } catch (err) {
    throw Object.assign(unavailable(`The engine tier cannot be reached: the NATS websocket at ${env.NATS_WS_URL} refused the connection (${(err as Error).message}). Please retry.`, 'engine_unavailable'), { cause: err });
  }
  try {
    return await fn(conn.transport);
  } finally {
    await conn.close().catch(() => {});
  }
}
