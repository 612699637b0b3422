/**
 * Continuous batching. One loop advances every running sequence by one step at a time; sequences join
 * (up to `maxBatch` running) and leave between steps. A prefilling sequence feeds up to `prefillChunk`
 * prompt tokens per step alongside the decoding ones. A failing step fails only the sequences in it;
 * the loop carries on with the rest.
 */
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { Admission } from './admission';
import type { DenseModel } from './dense-model';
import type { ExpertBackend } from './expert-backend';
import { withRequestIds } from '@unimoe/shared/log';
import { forwardStep, type StepPlan } from './forward';
import { bytesPerPosition, KvCachePool, slotCapacity } from './kv-cache';
import { PrefixCache } from './prefix-cache';
import { Scratch } from './scratch';
import type { Sequence } from './sequence';
import type { EngineStats } from './types';

export interface SchedulerOptions {
  maxBatch: number;
  prefillChunk: number;
  /** Most sequences waiting while every batch slot is taken; more are refused (EngineUnavailableError). */
  maxWaiting: number;
  /** KV-cache bytes all admitted sequences may ever reach together (see admission.ts). */
  kvBudgetBytes: number;
  /** Bytes of prompt-prefix KV kept for reuse (prefix-cache.ts); 0 turns prefix caching off. */
  prefixCacheBytes: number;
}

export class Scheduler {
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private readonly scratch = new Scratch();
  private loop: Promise<void> | null = null;
  private closing: Error | null = null;
  private steps = 0;
  private generatedTokens = 0;
  private readonly admission: Admission;
  /** Each admitted sequence's KV-cache reservation (budget bytes and its arena slot), freed when it leaves. */
  private readonly reservations = new Map<Sequence, () => void>();
  private readonly kvBytesPerPosition: number;
  private readonly pool: KvCachePool;
  private readonly prefixes: PrefixCache | null;
  /** Block keys of each admitted prompt (prefix caching), kept until its prompt is prefilled. */
  private readonly prefixKeys = new Map<Sequence, string[]>();

  constructor(
    private readonly manifest: Manifest,
    private readonly model: DenseModel,
    private readonly experts: ExpertBackend,
    private readonly opts: SchedulerOptions,
  ) {
    this.admission = new Admission(opts);
    const { layers, kvHeads, headDim } = manifest.config;
    this.pool = new KvCachePool({ layers, kvHeads, headDim });
    this.kvBytesPerPosition = bytesPerPosition(this.pool.shape);
    // Blocks are prefill chunks, so a hit leaves the same chunks to prefill as a miss (bit-exact results).
    this.prefixes = opts.prefixCacheBytes > 0 ? new PrefixCache(opts.prefillChunk, opts.prefixCacheBytes) : null;
  }

  /** Queues `seq`, or fails it at once when closing or when it is beyond the queue or KV budget. */
  submit(seq: Sequence): void {
    if (this.closing) return seq.fail(this.closing);
    try {
      // A sequence reserves its whole slot: its class's capacity (<= 2x its most positions).
      const budget = this.admission.reserve(slotCapacity(seq.maxPositions) * this.kvBytesPerPosition, ...this.occupancy());
      const slot = this.pool.reserve(seq.maxPositions);
      this.reservations.set(seq, () => (budget(), slot()));
    } catch (err) {
      return seq.fail(err as Error);
    }
    this.waiting.push(seq);
    this.wake();
  }

  /** Why a new request would be refused right now, or null (a cheap check before starting a response). */
  full(): string | null {
    return this.closing ? this.closing.message : this.admission.full(...this.occupancy());
  }

  /** Sequences waiting for a slot (beyond the free ones), and whether one more would start at once. */
  private occupancy(): [waiting: number, slotFree: boolean] {
    const taken = this.waiting.length + this.running.length;
    return [Math.max(0, taken - this.opts.maxBatch), taken < this.opts.maxBatch];
  }

  /** Called from an abort listener: a waiting sequence leaves at once; a running one before the next step. */
  onAbort(seq: Sequence): void {
    const i = this.waiting.indexOf(seq);
    if (i >= 0) {
      this.waiting.splice(i, 1);
      seq.complete('abort');
      this.release(seq);
    }
    this.wake();
  }

  stats(): EngineStats {
    const prefixCache = this.prefixes?.stats();
    return { running: this.running.length, waiting: this.waiting.length, steps: this.steps, generatedTokens: this.generatedTokens, ...(prefixCache ? { prefixCache } : {}) };
  }

  /** KV-cache bytes reserved by admitted sequences (their worst case; kvCacheBytes() is what they hold now). */
  kvReservedBytes(): number {
    return this.admission.reserved;
  }

  /** Bytes allocated for KV caches (every arena's slots). */
  kvCacheBytes(): number {
    return this.pool.bytes();
  }

  /** Fails every pending sequence with `reason` once the step in flight (if any) has finished. */
  async close(reason: Error): Promise<void> {
    this.closing = reason;
    for (const s of this.waiting.splice(0)) {
      s.fail(reason);
      this.release(s);
    }
    await this.loop;
  }

  private wake(): void {
    this.loop ??= this.runLoop().finally(() => (this.loop = null));
  }

  private async runLoop(): Promise<void> {
    for (;;) {
      this.reap();
      if (this.closing) {
        for (const s of this.running.splice(0)) {
          s.fail(this.closing);
          this.release(s);
        }
        return;
      }
      this.admit();
      if (this.running.length === 0) return;
      await this.step();
      // Let abort listeners, new requests and I/O run between steps whatever the backends do.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Drops finished and aborted sequences; aborting frees the cache here, between steps. */
  private reap(): void {
    for (let i = this.running.length - 1; i >= 0; i--) {
      const s = this.running[i];
      if (s.aborted && !s.done) s.complete('abort');
      if (s.done) {
        this.running.splice(i, 1);
        this.release(s);
      }
    }
  }

  private release(s: Sequence): void {
    this.reservations.get(s)?.();
    this.reservations.delete(s);
    this.prefixKeys.delete(s);
  }

  private admit(): void {
    while (this.running.length < this.opts.maxBatch && this.waiting.length > 0) {
      const s = this.waiting.shift()!;
      try {
        s.allocateCache(this.pool);
      } catch (err) {
        s.fail(new Error(`cannot allocate the KV cache: ${(err as Error).message}`));
        this.release(s);
        continue;
      }
      this.running.push(s);
      this.reusePrefix(s);
    }
  }

  /**
   * Starts `s` from the longest cached prefix of its prompt (never its last position, whose logits it needs).
   * Prompts that want prompt log probabilities prefill every position.
   */
  private reusePrefix(s: Sequence): void {
    if (!this.prefixes || s.wantsPromptLogprobs) return;
    const keys = this.prefixes.keys(s.prompt, s.embeddings, this.manifest.config.hidden, 0);
    if (keys.length === 0) return;
    this.prefixKeys.set(s, keys);
    const usable = Math.floor((s.prompt.length - 1) / this.prefixes.blockTokens);
    s.processed = this.prefixes.restore(keys.slice(0, usable), s.cache!);
  }

  private async step(): Promise<void> {
    const decode = this.running.filter((s) => !s.prefilling);
    const prefill = this.running.filter((s) => s.prefilling);
    const chunks = prefill.map((s) => s.prompt.slice(s.processed, Math.min(s.prompt.length, s.processed + this.opts.prefillChunk)));
    const plan: StepPlan = {
      decode: decode.map((s) => ({ cache: s.cache!, position: s.processed, inputId: s.generated[s.generated.length - 1] })),
      prefill: prefill.map((s, i) => ({
        cache: s.cache!,
        position: s.processed,
        ids: chunks[i],
        embeddings: s.embeddingRows(s.processed, s.processed + chunks[i].length, this.manifest.config.hidden),
      })),
      headRows: [],
    };
    // Head rows: one per sequence that samples this step, then (prompt log probabilities) prompt rows,
    // where the row of position q predicts prompt token q + 1.
    const chunkStart: number[] = [];
    let row = decode.length;
    for (const chunk of chunks) {
      chunkStart.push(row);
      row += chunk.length;
    }
    const completesPrompt = prefill.map((s, i) => s.processed + chunks[i].length === s.prompt.length);
    const producers: Sequence[] = [...decode, ...prefill.filter((_, i) => completesPrompt[i])];
    plan.headRows = [...decode.map((_, i) => i), ...chunkStart.flatMap((start, i) => (completesPrompt[i] ? [start + chunks[i].length - 1] : []))];
    const promptRows: { seq: Sequence; position: number }[] = [];
    prefill.forEach((s, i) => {
      if (!s.wantsPromptLogprobs) return;
      for (let j = 0; j < chunks[i].length && s.processed + j + 1 < s.prompt.length; j++) {
        plan.headRows.push(chunkStart[i] + j);
        promptRows.push({ seq: s, position: s.processed + j + 1 });
      }
    });

    let logits: Float32Array;
    try {
      // The step's expert requests carry the ids of every request batched into it (NATS header, worker logs).
      const requestIds = [...decode, ...prefill].flatMap((s) => s.requestIds);
      logits = await withRequestIds(requestIds, () => forwardStep(this.model, this.experts, this.scratch, plan));
    } catch (err) {
      const e = new Error(`generation step failed: ${(err as Error).message}`, { cause: err });
      for (const s of [...decode, ...prefill]) {
        if (s.aborted) s.complete('abort');
        else s.fail(e);
      }
      this.reap();
      return;
    }
    this.steps++;
    for (const s of decode) s.processed += 1;
    prefill.forEach((s, i) => (s.processed += chunks[i].length));
    prefill.forEach((s, i) => {
      const keys = completesPrompt[i] ? this.prefixKeys.get(s) : undefined;
      if (!keys) return;
      this.prefixKeys.delete(s);
      this.prefixes!.store(keys, s.cache!, this.kvBytesPerPosition);
    });

    const V = this.manifest.config.vocab;
    // Padded lm_head rows beyond the tokenizer's pieces are never sampled: they have no text.
    const sampleable = Math.min(V, this.manifest.tokenizer.vocabSize ?? V);
    const rowOf = (i: number) => logits.subarray(i * V, (i + 1) * V);
    promptRows.forEach((p, k) => p.seq.notePromptLogprob(p.position, rowOf(producers.length + k).subarray(0, sampleable)));
    // The other choices of an n > 1 request start here, from the prompt's KV, sampling the same row.
    const samplers = producers.flatMap((s, i) => {
      const forks = s.done || s.aborted ? [] : s.fork();
      // Forks hold slots of their own, reserved like the parent's (the budget counted the request once, as before).
      for (const f of forks) this.reservations.set(f, this.pool.reserve(f.maxPositions));
      this.running.push(...forks);
      return [{ s, i }, ...forks.map((f) => ({ s: f, i }))];
    });
    // Constrained choices wait for their grammar's mask; a step without any awaits nothing.
    const pending = samplers.map(({ s }) => s.nextMask());
    let masks: (Int32Array | undefined)[] = [];
    try {
      if (pending.some((m) => m !== undefined)) masks = await Promise.all(pending);
    } catch (err) {
      for (const { s } of samplers) s.fail(new Error(`the output grammar failed: ${(err as Error).message}`, { cause: err }));
      this.reap();
      return;
    }
    samplers.forEach(({ s, i }, k) => {
      if (s.done || s.aborted) return; // an abort during the step wins over its token
      try {
        const before = s.generated.length;
        s.accept(rowOf(i), sampleable, masks[k]);
        this.generatedTokens += s.generated.length - before;
      } catch (err) {
        s.fail(err as Error); // this request's own sampling or onToken problem
      }
    });
    this.reap(); // finished sequences leave now, so stats() right after a result is exact
  }
}
