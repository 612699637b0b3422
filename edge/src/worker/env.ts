/**
 * The Worker's bindings and settings (infra/workers/wrangler.toml `[vars]`, secrets from `wrangler secret
 * put` or .dev.vars locally) and the API configuration they make.
 */
import type { ApiConfig } from '../api/config';
import type { D1Binding } from '../db/d1-store';

export interface WorkerEnv {
  /** Keys and usage (D1). */
  DB: D1Binding;
  /** The NATS server's websocket listener: wss://... in production, ws://127.0.0.1:PORT locally. */
  NATS_WS_URL: string;
  /** The model (the bundle manifest's `name`) whose engines this Worker serves: found by discovery. */
  MODEL: string;
  /** Secrets, one kind: the `edge` role's nkey seed (`unimoe nats-auth` writes it to edge.nk), user + password, or a token. */
  NATS_NKEY_SEED?: string;
  NATS_USER?: string;
  NATS_PASSWORD?: string;
  NATS_TOKEN?: string;
  /** Guards /metrics and /readyz with a bearer token (secret). */
  METRICS_TOKEN?: string;
  /** "true": serve without API keys (local development only). */
  NO_AUTH?: string;
  /** Whole-number limits overriding the API defaults (edge/src/api/config.ts). */
  MAX_TOKENS_CAP?: string;
  REQUESTS_PER_MINUTE?: string;
  MAX_CONCURRENT_PER_KEY?: string;
  REQUEST_TIMEOUT_MS?: string;
}

const NUMERIC: [keyof WorkerEnv, keyof ApiConfig][] = [
  ['MAX_TOKENS_CAP', 'maxTokensCap'],
  ['REQUESTS_PER_MINUTE', 'requestsPerMinute'],
  ['MAX_CONCURRENT_PER_KEY', 'maxConcurrentPerKey'],
  ['REQUEST_TIMEOUT_MS', 'requestTimeoutMs'],
];

/** Checks the settings a Worker cannot start without; a message names the missing or malformed one. */
export function apiConfigFromEnv(env: WorkerEnv): Partial<ApiConfig> {
  for (const name of ['NATS_WS_URL', 'MODEL'] as const) {
    if (!env[name]) throw new Error(`the Worker needs ${name} (infra/workers/wrangler.toml [vars]; \`pnpm workers:dev\` takes it from the environment)`);
  }
  if (!/^wss?:\/\//.test(env.NATS_WS_URL)) throw new Error(`NATS_WS_URL must be a ws:// or wss:// URL, got ${JSON.stringify(env.NATS_WS_URL)}`);
  const config: Partial<ApiConfig> = { noAuth: env.NO_AUTH === 'true' };
  if (env.METRICS_TOKEN) config.metricsToken = env.METRICS_TOKEN;
  for (const [name, field] of NUMERIC) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    if (!/^\d+$/.test(String(value))) throw new Error(`${name} must be a whole number, got ${JSON.stringify(value)}`);
    (config as Record<string, number>)[field] = Number(value);
  }
  return config;
}
