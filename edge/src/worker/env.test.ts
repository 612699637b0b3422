import { describe, expect, it } from 'vitest';
import { nkeys } from 'nats';
import { apiConfigFromEnv, type WorkerEnv } from './env';
import { natsOptions } from './nats';

const env = (extra: Partial<WorkerEnv>): WorkerEnv => ({ DB: {} as WorkerEnv['DB'], NATS_WS_URL: 'wss://nats.example.com', MODEL: 'm', ...extra });

describe('Worker settings', () => {
  it('limits from vars, and a message naming a missing or malformed one', () => {
    expect(apiConfigFromEnv(env({ MAX_TOKENS_CAP: '256', REQUESTS_PER_MINUTE: '0', NO_AUTH: 'true', METRICS_TOKEN: 't' }))).toEqual({
      maxTokensCap: 256,
      requestsPerMinute: 0,
      noAuth: true,
      metricsToken: 't',
    });
    expect(() => apiConfigFromEnv(env({ MODEL: '' }))).toThrow('the Worker needs MODEL');
    expect(() => apiConfigFromEnv(env({ NATS_WS_URL: 'nats://127.0.0.1:4222' }))).toThrow('NATS_WS_URL must be a ws:// or wss:// URL');
    expect(() => apiConfigFromEnv(env({ MAX_TOKENS_CAP: '12k' }))).toThrow('MAX_TOKENS_CAP must be a whole number, got "12k"');
  });

  it('NATS credentials: one kind, an nkey seed checked before use', () => {
    const seed = new TextDecoder().decode(nkeys.createUser().getSeed());
    expect(natsOptions(env({ NATS_NKEY_SEED: seed })).authenticator).toBeTypeOf('function');
    expect(natsOptions(env({ NATS_USER: 'edge', NATS_PASSWORD: 'p' }))).toMatchObject({ user: 'edge', pass: 'p', reconnect: false });
    expect(natsOptions(env({ NATS_TOKEN: 't' }))).toMatchObject({ token: 't' });
    expect(() => natsOptions(env({ NATS_TOKEN: 't', NATS_USER: 'edge' }))).toThrow('not NATS_USER and NATS_TOKEN');
    expect(() => natsOptions(env({ NATS_PASSWORD: 'p' }))).toThrow('NATS_PASSWORD needs NATS_USER');
    expect(() => natsOptions(env({ NATS_NKEY_SEED: 'UABC' }))).toThrow('NATS_NKEY_SEED must be an nkey user seed');
  });
});
