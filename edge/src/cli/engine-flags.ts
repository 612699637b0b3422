/** The continuous-batching and KV-cache flags shared by `serve` (embedded/split) and `engine`. */
import { parseNumber } from './args';

export const ENGINE_FLAG_NAMES = ['max-batch', 'prefill-chunk', 'max-queue', 'kv-budget-mb', 'prefix-cache-mb'] as const;

export interface EngineFlagOptions {
  maxBatch: number;
  prefillChunk: number;
  maxWaiting: number;
  kvBudgetBytes?: number;
  prefixCacheBytes?: number;
}

export function engineOptionsFromFlags(values: Partial<Record<(typeof ENGINE_FLAG_NAMES)[number], string>>): EngineFlagOptions {
  return {
    maxBatch: parseNumber(values['max-batch'], '--max-batch', 16, { integer: true, min: 1, max: 1024 }),
    prefillChunk: parseNumber(values['prefill-chunk'], '--prefill-chunk', 128, { integer: true, min: 1, max: 8192 }),
    maxWaiting: parseNumber(values['max-queue'], '--max-queue', 256, { integer: true, min: 0 }),
    ...(values['kv-budget-mb'] ? { kvBudgetBytes: Math.round(parseNumber(values['kv-budget-mb'], '--kv-budget-mb', 0, { min: 1 }) * 2 ** 20) } : {}),
    ...(values['prefix-cache-mb'] ? { prefixCacheBytes: Math.round(parseNumber(values['prefix-cache-mb'], '--prefix-cache-mb', 0, { min: 0 }) * 2 ** 20) } : {}),
  };
}
