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
import { forwardStep, type StepPlan } from './forward';
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
  /** Each admitted sequence's KV-cache reservation, freed when it leaves. */
  private readonly reservations = new Map<Sequence, () => void>();
  private readonly kvBytesPerPosition: number;

  constructor(
    private readonly manifest: Manifest,
    private readonly model: DenseModel,
    private readonly experts: ExpertBackend,
    private readonly opts: SchedulerOptions,
  ) {
    this.admission = new Admission(opts);
    const { layers, kvHeads, headDim } = manifest.config;
    this.kvBytesPerPosition = layers * 2 * kvHeads * headDim * Float32Array.BYTES_PER_ELEMENT;
  }

  /** Queues `seq`, or fails it at once when closing or when it is beyond the queue or KV budget. */
  submit(seq: Sequence): void {
    if (this.closing) return seq.fail(this.closing);
    try {
      this.reservations.set(seq, this.admission.reserve(seq.maxPositions * this.kvBytesPerPosition, ...this.occupancy()));
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
    return { running: this.running.length, waiting: this.waiting.length, steps: this.steps, generatedTokens: this.generatedTokens };
  }

  /** KV-cache bytes reserved by admitted sequences (their worst case; kvCacheBytes() is what they hold now). */
  kvReservedBytes(): number {
    return this.admission.reserved;
  }

  /** Bytes held by the KV caches of running sequences. */
  kvCacheBytes(): number {
    let n = 0;
    for (const s of this.running) n += s.cache?.bytes() ?? 0;
    return n;
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
  }

  private admit(): void {
    const { layers, kvHeads, headDim } = this.manifest.config;
    while (this.running.length < this.opts.maxBatch && this.waiting.length > 0) {
      const s = this.waiting.shift()!;
      try {
        s.allocateCache({ layers, kvHeads, headDim });
      } catch (err) {
        s.fail(new Error(`cannot allocate the KV cache: ${(err as Error).message}`));
        this.release(s);
        continue;
      }
      this.running.push(s);
    }
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
    const producers: Sequence[] = [...decode];
    plan.headRows = decode.map((_, i) => i);
    let row = decode.length;
    prefill.forEach((s, i) => {
      row += chunks[i].length;
      if (s.processed + chunks[i].length === s.prompt.length) {
        producers.push(s);
        plan.headRows.push(row - 1);
      }
    });

    let logits: Float32Array;
    try {
      logits = await forwardStep(this.model, this.experts, this.scratch, plan);
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

    const V = this.manifest.config.vocab;
    // Padded lm_head rows beyond the tokenizer's pieces are never sampled: they have no text.
    const sampleable = Math.min(V, this.manifest.tokenizer.vocabSize ?? V);
    producers.forEach((s, i) => {
      if (s.done || s.aborted) return; // an abort during the step wins over its token
      try {
        const before = s.generated.length;
        s.accept(logits.subarray(i * V, (i + 1) * V), sampleable);
        this.generatedTokens += s.generated.length - before;
      } catch (err) {
        s.fail(err as Error); // this request's own sampling or onToken problem
      }
    });
    this.reap(); // finished sequences leave now, so stats() right after a result is exact
  }
}
