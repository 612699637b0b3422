/**
 * The single-process generation engine: dense units in this process, experts wherever the given
 * `ExpertBackend` puts them (in-process by default), continuous batching over all live requests.
 */
import { totalmem } from 'node:os';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { validateSamplingOptions } from '@unimoe/shared/model/sampling';
import type { UnitSessionOptions } from '@unimoe/shared/runtime/ort-unit';
import { readManifest } from '@unimoe/shared/bundle/load';
import { DenseModel } from './dense-model';
import type { ExpertBackend } from './expert-backend';
import { LocalExpertBackend } from './local-experts';
import { ChoiceGroup } from './choice-group';
import { Scheduler } from './scheduler';
import { Sequence } from './sequence';
import type { GenerationEngine, GenerationRequest, GenerationResult, PromptEmbedding } from './types';

export interface EngineOptions {
  bundleDir: string;
  /** Where experts run; default: in-process from the bundle. A backend passed in stays the caller's to close. */
  experts?: ExpertBackend;
  /** Most sequences advanced together in one step (default 16). */
  maxBatch?: number;
  /** Most prompt tokens one sequence feeds per step (default 128). */
  prefillChunk?: number;
  /** Most requests waiting while every batch slot is taken; more are refused with EngineUnavailableError (default 256). */
  maxWaiting?: number;
  /** KV-cache bytes all admitted requests may ever reach together (default: half of this machine's memory). */
  kvBudgetBytes?: number;
  /**
   * Bytes of prompt-prefix KV kept for reuse by later prompts that start the same way (default 512 MiB,
   * outside kvBudgetBytes; 0 turns prefix caching off). Prefixes are whole `prefillChunk` blocks.
   */
  prefixCacheBytes?: number;
  /** Load (and verify) every in-process expert at start instead of on first use. */
  eagerExperts?: boolean;
  session?: UnitSessionOptions;
}

export interface Engine extends GenerationEngine {
  readonly manifest: Manifest;
  /** Bytes held by the KV caches of running sequences. */
  kvCacheBytes(): number;
  /** Bytes admitted requests may reach at most (what the KV budget counts). */
  kvReservedBytes(): number;
  /** Why a new request would be refused right now (queue or KV budget full, closing), or null. */
  full(): string | null;
  /** Stops; requests still queued or running fail with `reason` (default: "engine closed"). */
  close(reason?: Error): Promise<void>;
}

/** Prompt prefixes kept for reuse by default (outside kvBudgetBytes). */
const DEFAULT_PREFIX_CACHE_BYTES = 512 * 2 ** 20;

export async function createEngine(opts: EngineOptions): Promise<Engine> {
  const maxBatch = opts.maxBatch ?? 16;
  const prefillChunk = opts.prefillChunk ?? 128;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new Error(`maxBatch must be an integer >= 1, got ${maxBatch}`);
  if (!Number.isInteger(prefillChunk) || prefillChunk < 1) throw new Error(`prefillChunk must be an integer >= 1, got ${prefillChunk}`);
  const manifest = await readManifest(opts.bundleDir);
  const model = await DenseModel.load(opts.bundleDir, manifest, opts.session);
  let experts = opts.experts;
  if (!experts) {
    try {
      experts = await LocalExpertBackend.open(opts.bundleDir, { session: opts.session, eager: opts.eagerExperts }, manifest);
    } catch (err) {
      await model.release();
      throw err;
    }
  }
  const ownsExperts = !opts.experts;
  const maxWaiting = opts.maxWaiting ?? 256;
  const kvBudgetBytes = opts.kvBudgetBytes ?? Math.floor(totalmem() / 2);
  if (!Number.isInteger(maxWaiting) || maxWaiting < 0) throw new Error(`maxWaiting must be an integer >= 0, got ${maxWaiting}`);
  if (!(kvBudgetBytes > 0)) throw new Error(`kvBudgetBytes must be > 0, got ${kvBudgetBytes}`);
  const prefixCacheBytes = opts.prefixCacheBytes ?? DEFAULT_PREFIX_CACHE_BYTES;
  if (!(prefixCacheBytes >= 0)) throw new Error(`prefixCacheBytes must be >= 0, got ${prefixCacheBytes}`);
  const scheduler = new Scheduler(manifest, model, experts, { maxBatch, prefillChunk, maxWaiting, kvBudgetBytes, prefixCacheBytes });
  const cfg = manifest.config;
  let closed: Promise<void> | null = null;

  const checkIds = (ids: number[], what: string, allowEmpty = false) => {
    if (!Array.isArray(ids) || (ids.length === 0 && !allowEmpty)) throw new Error(`${what} must be a ${allowEmpty ? '' : 'non-empty '}array of token ids`);
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= cfg.vocab) throw new Error(`${what}[${i}] = ${id} is not a token id in [0, ${cfg.vocab})`);
    });
  };

  /** Runs must lie inside the prompt, not overlap, and hold [tokens, hidden] finite floats. */
  const checkEmbeddings = (runs: PromptEmbedding[] | undefined, promptLength: number): PromptEmbedding[] => {
    if (runs === undefined) return [];
    if (!Array.isArray(runs)) throw new Error('embeddings must be an array of { index, tokens, data }');
    const sorted = [...runs].sort((a, b) => a.index - b.index);
    let end = 0;
    for (const [i, r] of sorted.entries()) {
      const what = `embeddings run at prompt position ${r?.index}`;
      if (!Number.isInteger(r?.index) || r.index < 0 || !Number.isInteger(r.tokens) || r.tokens < 1 || r.index + r.tokens > promptLength) {
        throw new Error(`${what}: index ${r?.index} and tokens ${r?.tokens} must describe a non-empty run inside the ${promptLength}-token prompt`);
      }
      if (i > 0 && r.index < end) throw new Error(`${what} overlaps the run before it (which ends at ${end})`);
      if (!(r.data instanceof Float32Array) || r.data.length !== r.tokens * cfg.hidden) {
        throw new Error(`${what}: data must be a Float32Array of ${r.tokens} x ${cfg.hidden} values, got ${r.data?.length ?? 'none'}`);
      }
      const bad = r.data.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) throw new Error(`${what}: value ${bad} is ${r.data[bad]}, not finite`);
      end = r.index + r.tokens;
    }
    return sorted;
  };

  const checkChoices = (req: GenerationRequest, maxTokens: number) => {
    const p = req.params;
    const n = req.n ?? 1;
    if (!Number.isInteger(n) || n < 1) throw new Error(`n must be an integer >= 1, got ${n}`);
    if (req.constraints !== undefined && req.constraints.length !== n) throw new Error(`constraints must hold one per choice (${n}), got ${req.constraints.length}`);
    for (const [name, v, ok] of [
      ['presencePenalty', p.presencePenalty, (x: number) => Number.isFinite(x)],
      ['frequencyPenalty', p.frequencyPenalty, (x: number) => Number.isFinite(x)],
      ['repetitionPenalty', p.repetitionPenalty, (x: number) => Number.isFinite(x) && x > 0],
      ['minTokens', p.minTokens, (x: number) => Number.isInteger(x) && x >= 0 && x <= maxTokens],
      ['logprobs', p.logprobs, (x: number) => Number.isInteger(x) && x >= 0],
      ['promptLogprobs', req.promptLogprobs, (x: number) => Number.isInteger(x) && x >= 0],
    ] as const) {
      if (v !== undefined && !ok(v)) throw new Error(`${name} is out of range: ${v}`);
    }
    for (const [id, bias] of Object.entries(p.logitBias ?? {})) {
      if (!/^\d+$/.test(id) || Number(id) >= cfg.vocab || !Number.isFinite(bias)) throw new Error(`logitBias: ${id} -> ${bias} is not a token id with a finite bias`);
    }
  };

  return {
    manifest,
    generate(req: GenerationRequest): Promise<GenerationResult> {
      return new Promise((resolve, reject) => {
        let embeddings: PromptEmbedding[];
        try {
          checkIds(req.promptIds, 'promptIds');
          embeddings = checkEmbeddings(req.embeddings, req.promptIds.length);
          const p = req.params;
          if (!Number.isInteger(p?.maxTokens) || p.maxTokens < 1) throw new Error(`maxTokens must be an integer >= 1, got ${p?.maxTokens}`);
          validateSamplingOptions(p);
          if (p.seed !== undefined && !Number.isSafeInteger(p.seed)) throw new Error(`seed must be a safe integer, got ${p.seed}`);
          if (p.stopTokenIds !== undefined) checkIds(p.stopTokenIds, 'stopTokenIds', true);
          checkChoices(req, p.maxTokens);
          if (req.promptIds.length + p.maxTokens > cfg.maxPositions) {
            throw new Error(
              `prompt (${req.promptIds.length} tokens) + maxTokens (${p.maxTokens}) exceeds the model's ${cfg.maxPositions} positions`,
            );
          }
        } catch (err) {
          return reject(err);
        }
        const n = req.n ?? 1;
        const group = new ChoiceGroup(n, req.promptIds.length, resolve, reject, req.promptLogprobs !== undefined);
        if (req.signal?.aborted) {
          for (let i = 0; i < n; i++) group.finishChoice(i, { ids: [], finishReason: 'abort', completionTokens: 0 });
          return;
        }
        scheduler.submit(new Sequence([...req.promptIds], req, cfg.eos, { kind: 'generate', group }, (s) => scheduler.onAbort(s), embeddings));
      });
    },
    logits(promptIds: number[], opts?: { embeddings?: PromptEmbedding[] }): Promise<Float32Array> {
      return new Promise((resolve, reject) => {
        let embeddings: PromptEmbedding[];
        try {
          checkIds(promptIds, 'promptIds');
          embeddings = checkEmbeddings(opts?.embeddings, promptIds.length);
          if (promptIds.length > cfg.maxPositions) throw new Error(`prompt (${promptIds.length} tokens) exceeds the model's ${cfg.maxPositions} positions`);
        } catch (err) {
          return reject(err);
        }
        scheduler.submit(new Sequence([...promptIds], null, cfg.eos, { kind: 'logits', resolve, reject }, (s) => scheduler.onAbort(s), embeddings));
      });
    },
    stats: () => scheduler.stats(),
    kvCacheBytes: () => scheduler.kvCacheBytes(),
    kvReservedBytes: () => scheduler.kvReservedBytes(),
    full: () => scheduler.full(),
    close(reason?: Error): Promise<void> {
      closed ??= (async () => {
        await scheduler.close(reason ?? new Error('engine closed'));
        await model.release();
        if (ownsExperts) await experts.close();
      })();
      return closed;
    },
  };
}
