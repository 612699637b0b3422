/**
 * The edge's Prometheus metrics (one registry for the process). Other modules record into it through the
 * small functions below, e.g. the dispatcher calls observeExpertDispatch for every (layer, expert) batch.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineStats } from '../engine/types';

export const registry = new Registry();

const httpRequests = new Counter({
  name: 'unimoe_http_requests_total',
  help: 'HTTP requests by route and status code.',
  labelNames: ['route', 'status'] as const,
  registers: [registry],
});
const promptTokens = new Counter({
  name: 'unimoe_prompt_tokens_total',
  help: 'Prompt tokens of finished chat completions, by model and modality.',
  labelNames: ['model', 'modality'] as const,
  registers: [registry],
});
const completionTokens = new Counter({
  name: 'unimoe_completion_tokens_total',
  help: 'Generated tokens of finished chat completions, by model.',
  labelNames: ['model'] as const,
  registers: [registry],
});
const timeToFirstToken = new Histogram({
  name: 'unimoe_time_to_first_token_seconds',
  help: 'Time from receiving a chat completion request to its first generated token.',
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});
const interTokenLatency = new Histogram({
  name: 'unimoe_inter_token_latency_seconds',
  help: 'Time between consecutive generated tokens of one sequence.',
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
  registers: [registry],
});
const requestDuration = new Histogram({
  name: 'unimoe_request_duration_seconds',
  help: 'Wall time of chat completion requests, until the last byte was produced.',
  buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  registers: [registry],
});
const expertDispatch = new Histogram({
  name: 'unimoe_expert_dispatch_seconds',
  help: 'Time to run one (layer, expert) token batch, including transport in split mode.',
  labelNames: ['layer', 'expert'] as const,
  buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
  registers: [registry],
});
const expertTokens = new Counter({
  name: 'unimoe_expert_tokens_total',
  help: 'Tokens routed to each (layer, expert).',
  labelNames: ['layer', 'expert'] as const,
  registers: [registry],
});

const routedTokens = new Counter({
  name: 'unimoe_expert_routed_tokens_total',
  help: 'Tokens routed to each (layer, expert), by the modality of the token (text, image, audio, video).',
  labelNames: ['layer', 'expert', 'modality'] as const,
  registers: [registry],
});

let engineStats: (() => EngineStats) | null = null;
new Gauge({
  name: 'unimoe_engine_running_sequences',
  help: 'Sequences the engine is generating right now.',
  registers: [registry],
  collect() {
    this.set(engineStats?.().running ?? 0);
  },
});
new Gauge({
  name: 'unimoe_engine_waiting_sequences',
  help: 'Sequences admitted but waiting for a decode slot (queue depth).',
  registers: [registry],
  collect() {
    this.set(engineStats?.().waiting ?? 0);
  },
});

/** Prefix cache counters, read from the engine's totals at scrape time. */
const prefixCounter = (name: string, help: string, read: (p: NonNullable<EngineStats['prefixCache']>) => number) =>
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      const p = engineStats?.().prefixCache;
      if (p) this.inc(read(p));
    },
  });
prefixCounter('unimoe_prefix_cache_lookups_total', 'Prompts looked up in the prefix cache (those of at least one whole block).', (p) => p.lookups);
prefixCounter('unimoe_prefix_cache_hits_total', 'Prompt lookups that reused a cached prefix.', (p) => p.hits);
prefixCounter('unimoe_prefix_cache_hit_tokens_total', 'Prompt positions not prefilled because their KV came from the prefix cache.', (p) => p.hitTokens);
new Gauge({
  name: 'unimoe_prefix_cache_hit_rate',
  help: 'Prefix cache hits / lookups since start (0 before any lookup).',
  registers: [registry],
  collect() {
    const p = engineStats?.().prefixCache;
    this.set(p && p.lookups > 0 ? p.hits / p.lookups : 0);
  },
});
new Gauge({
  name: 'unimoe_prefix_cache_bytes',
  help: 'Bytes of KV held by the prefix cache.',
  registers: [registry],
  collect() {
    this.set(engineStats?.().prefixCache?.bytes ?? 0);
  },
});

/** The engine whose queue the gauges report (the last one served). */
export function setEngineStatsSource(source: () => EngineStats): void {
  engineStats = source;
}

export function countHttpRequest(route: string, status: number): void {
  httpRequests.inc({ route, status: String(status) });
}

export function observeCompletion(model: string, prompt: Record<string, number>, completion: number, seconds: number): void {
  for (const [modality, n] of Object.entries(prompt)) if (n > 0) promptTokens.inc({ model, modality }, n);
  if (completion > 0) completionTokens.inc({ model }, completion);
  requestDuration.observe(seconds);
}

export function observeFirstToken(seconds: number): void {
  timeToFirstToken.observe(seconds);
}

export function observeInterToken(seconds: number): void {
  interTokenLatency.observe(seconds);
}

export function observeExpertDispatch(layer: number, expert: number, tokens: number, ms: number, modalities: Record<string, number> = { text: tokens }): void {
  const labels = { layer: String(layer), expert: String(expert) };
  expertDispatch.observe(labels, ms / 1000);
  expertTokens.inc(labels, tokens);
  for (const [modality, n] of Object.entries(modalities)) if (n > 0) routedTokens.inc({ ...labels, modality }, n);
}
