/**
 * `pnpm bench:engine`: the single-process engine on the realistic benchmark model.
 * This machine's read bandwidth and the batch-1 decode limit it implies (weight bytes per token / bandwidth);
 * load time; prefill and decode tokens/s at 1, 8 and 32 concurrent sequences, the batch-1 step against
 * the limit and where its time goes; decode at 32 sequences with 64- vs 1024-token contexts (the long
 * prompts share a prefix, prefilled once thanks to the prefix cache); the expert FFN unit's GFLOP/s at
 * 1, 16 and 128 tokens next to onnxruntime's own large-matmul GFLOP/s on this machine; then the
 * weight-dtype rows (./dtypes.ts). BENCH_DTYPE=int8|int4|float16 runs every table but the last on that
 * bundle instead of float32 (its batch-1 breakdown shows where a quantized step's time goes).
 */
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { readManifest } from '@unimoe/shared/bundle/load';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { loadUnitSession } from '@unimoe/shared/runtime/ort-unit';
import { GraphBuilder } from '@unimoe/shared/onnx/graph';
import { DenseModel } from '@unimoe/edge/engine/dense-model';
import { createEngine, type Engine } from '@unimoe/edge/engine/engine';
import { bytesPerPosition, slotCapacity } from '@unimoe/edge/engine/kv-cache';
import { LocalExpertBackend } from '@unimoe/edge/engine/local-experts';
import { measureBandwidth, weightBytesPerToken } from './bandwidth';
import { benchDType, realisticBundle, REALISTIC } from './realistic-model';
import { fmt, printTable } from './table';
import { printDtypeRows } from './dtypes';

const PROMPT_LEN = 128;
const DECODE_TOKENS = 32;
const greedy = { temperature: 0, topP: 1, topK: 0 };

function prompt(seq: number, len: number): number[] {
  // Deterministic, distinct prompts (ids within the tokenizer's range are irrelevant to speed).
  return [1, ...Array.from({ length: len - 1 }, (_, i) => 3 + ((seq * 7919 + i * 104729) % (REALISTIC.vocab - 3)))];
}

async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

/** The prompts decoding `tokens` each, all at once: tokens/s from the first sequence's first token to the last token of all. */
async function decodeRate(engine: Engine, prompts: number[][], tokens: number): Promise<{ tokensPerSecond: number; msPerStep: number }> {
  let firstToken = Infinity;
  let lastToken = 0;
  let decoded = 0;
  await Promise.all(
    prompts.map((promptIds) => {
      let count = 0;
      return engine.generate({
        promptIds,
        params: { ...greedy, maxTokens: tokens, stopTokenIds: [] },
        onToken: () => {
          const now = performance.now();
          if (count === 0) firstToken = Math.min(firstToken, now);
          else decoded++;
          lastToken = Math.max(lastToken, now);
          count++;
        },
      });
    }),
  );
  const seconds = (lastToken - firstToken) / 1000;
  return { tokensPerSecond: decoded / seconds, msPerStep: (seconds / (decoded / prompts.length)) * 1000 };
}

async function main() {
  const dtype = benchDType(['float32', 'float16', 'int8', 'int4']);
  const bundleDir = await realisticBundle(console.error, dtype);
  const manifest = await readManifest(bundleDir);
  console.log(`# bench:engine - ${cpus()[0]?.model ?? 'cpu'} x ${availableParallelism()}, bundle ${bundleDir} (${manifest.quant?.dtype ?? manifest.dtype})`);

  const bandwidth = await measureBandwidth();
  const bytes = weightBytesPerToken(manifest);
  const limitMs = (bytes.total / (bandwidth.reduceSum * 1e9)) * 1000;
  printTable(
    'Read bandwidth and the batch-1 decode limit',
    ['measure', 'value'],
    [
      ['read bandwidth: onnxruntime ReduceSum over 512 MiB (used for the limit)', `${fmt(bandwidth.reduceSum)} GB/s`],
      ['weight read by a 1-row MatMul over 256 MiB', `${fmt(bandwidth.gemv)} GB/s`],
      ['weight bytes per decode token: attn + top-k experts + head', `${fmt(bytes.total / 1e6)} MB (${fmt(bytes.attn / 1e6)} + ${fmt(bytes.experts / 1e6)} + ${fmt(bytes.head / 1e6)})`],
      ['batch-1 step limit: bytes / bandwidth', `${fmt(limitMs, 2)} ms`],
    ],
  );

  const loadSeconds = await timeIt(async () => (await createEngine({ bundleDir, maxBatch: 64 })).close());
  // Every expert loaded up front: a lazy first load inside the measured steps is not decode time.
  const engine = await createEngine({ bundleDir, maxBatch: 64, eagerExperts: true });
  // Warm up every session, at the prompt length measured too (the first large run grows onnxruntime's arenas).
  await engine.generate({ promptIds: prompt(0, PROMPT_LEN), params: { ...greedy, maxTokens: 2 } });

  const rows: (string | number)[][] = [];
  for (const n of [1, 8, 32]) {
    // Prefill: n prompts of PROMPT_LEN tokens, one generated token each.
    const prefillSeconds = await timeIt(() =>
      Promise.all(Array.from({ length: n }, (_, s) => engine.generate({ promptIds: prompt(s, PROMPT_LEN), params: { ...greedy, maxTokens: 1 } }))),
    );
    const decode = await decodeRate(engine, Array.from({ length: n }, (_, s) => prompt(100 + s, 16)), DECODE_TOKENS);
    rows.push([n, fmt((n * PROMPT_LEN) / prefillSeconds), fmt(decode.tokensPerSecond), fmt(decode.msPerStep, 2), n === 1 ? fmt(decode.msPerStep / limitMs, 2) : '']);
  }
  printTable(
    `Engine (load ${fmt(loadSeconds, 2)} s, prompt ${PROMPT_LEN} tokens, ${DECODE_TOKENS} decode tokens per sequence)`,
    ['sequences', 'prefill tok/s', 'decode tok/s', 'ms per decode step', 'step / bandwidth limit'],
    rows,
  );
  await batchOneBreakdown(engine, manifest, bytes, bandwidth.reduceSum);
  await engine.close();

  await contextRows(bundleDir, manifest, bandwidth.reduceSum);
  await expertTable(bundleDir, manifest);
}

/**
 * Where one batch-1 decode step's time goes, measured inside the engine's own decode (one run, so the
 * parts add up to the step): every unit call timed (the DenseModel and LocalExpertBackend methods wrapped
 * for the run), forwardStep as the span from a step's embed call to its head call, and the scheduler's
 * share (sampling, bookkeeping, the event-loop turn between steps) as the span from one step's head call
 * to the next step's embed call. Each part is set against what reading its weights costs at the measured
 * bandwidth.
 */
async function batchOneBreakdown(engine: Engine, manifest: Manifest, bytes: ReturnType<typeof weightBytesPerToken>, gbPerSecond: number): Promise<void> {
  const spent = { embed: 0, attn: 0, experts: 0, head: 0, forward: 0, between: 0 };
  let recording = false;
  let stepStart = 0;
  let headEnd = NaN;
  const restore: (() => void)[] = [];
  const time = (proto: object, method: string, part: 'embed' | 'attn' | 'experts' | 'head') => {
    const p = proto as Record<string, (...a: unknown[]) => Promise<unknown>>;
    const original = p[method]!;
    restore.push(() => (p[method] = original));
    p[method] = async function (this: unknown, ...args: unknown[]) {
      const t0 = performance.now();
      if (part === 'embed') {
        if (recording && !Number.isNaN(headEnd)) spent.between += t0 - headEnd;
        stepStart = t0;
      }
      try {
        return await original.apply(this, args);
      } finally {
        const t1 = performance.now();
        if (recording) spent[part] += t1 - t0;
        if (part === 'head') {
          if (recording) spent.forward += t1 - stepStart;
          headEnd = t1;
        }
      }
    };
  };
  time(DenseModel.prototype, 'embed', 'embed');
  time(DenseModel.prototype, 'attn', 'attn');
  time(DenseModel.prototype, 'head', 'head');
  time(LocalExpertBackend.prototype, 'runExperts', 'experts');
  // From the first token to the last: the decode steps in between, each preceded by the gap before it.
  const tokens = 33;
  const times: number[] = [];
  try {
    await engine.generate({
      promptIds: prompt(7, 32),
      params: { ...greedy, maxTokens: tokens, stopTokenIds: [] },
      onToken: () => {
        times.push(performance.now());
        recording = times.length < tokens;
      },
    });
  } finally {
    for (const undo of restore) undo();
  }
  const steps = tokens - 1;
  const stepMs = (times.at(-1)! - times[0]!) / steps;

  const perStep = (ms: number) => ms / steps;
  const limit = (b: number) => (b / (gbPerSecond * 1e9)) * 1000;
  const inUnits = spent.embed + spent.attn + spent.experts + spent.head;
  const row = (part: string, ms: number, limitMs?: number) => [part, fmt(ms, 2), limitMs === undefined ? '' : fmt(limitMs, 2), limitMs === undefined ? '' : fmt(ms / limitMs, 2)];
  printTable(
    `Batch-1 decode step, broken down (${steps} engine steps; limit = weight bytes / ${fmt(gbPerSecond)} GB/s)`,
    ['part', 'ms per step', 'limit ms', 'ratio'],
    [
      row('embed (1 call)', perStep(spent.embed)),
      row(`attn units (${manifest.config.layers} calls)`, perStep(spent.attn), limit(bytes.attn)),
      row(`experts (${manifest.config.layers} runExperts calls of top-${manifest.config.routing.topK})`, perStep(spent.experts), limit(bytes.experts)),
      row('head (1 call)', perStep(spent.head), limit(bytes.head)),
      row('forwardStep outside unit calls (routing, combine, masks, KV append)', perStep(spent.forward - inUnits)),
      row('forwardStep', perStep(spent.forward), limit(bytes.total)),
      row('scheduler between steps (sampling, bookkeeping, event loop)', perStep(spent.between)),
      row('engine step (first to last token)', stepMs, limit(bytes.total)),
    ],
  );
}

/**
 * Decode at 32 sequences with 64- and 1024-token contexts; the long prompts share a prefix the prefix cache
 * fills once. The KV the attention reads per step (every slot position, filled or not) at the measured
 * bandwidth bounds how close the long row can come: 'best vs 64' is the 64-token step over that step
 * plus the extra KV read.
 */
async function contextRows(bundleDir: string, manifest: Manifest, gbPerSecond: number): Promise<void> {
  const n = 32;
  const tokens = 32;
  const chunk = 64;
  const engine = await createEngine({ bundleDir, maxBatch: n, prefillChunk: chunk, eagerExperts: true });
  await engine.generate({ promptIds: prompt(0, chunk), params: { ...greedy, maxTokens: 2 } });
  const rows: (string | number)[][] = [];
  let short = NaN;
  let shortStep = NaN;
  let shortKv = NaN;
  for (const context of [64, 1024]) {
    const promptLen = context - tokens;
    // One shared prefix of whole prefill chunks (a system prompt, an image), then each sequence's own tokens.
    const shared = Math.max(0, Math.floor((promptLen - 32) / chunk) * chunk);
    const prefix = prompt(999, Math.max(1, shared)).slice(0, shared);
    const prompts = Array.from({ length: n }, (_, s) => [...prefix, ...prompt(200 + s, promptLen - shared)]);
    if (shared > 0) await engine.generate({ promptIds: [...prefix, ...prompt(300, promptLen - shared)], params: { ...greedy, maxTokens: 1 } }); // fills the prefix cache
    const before = engine.stats().prefixCache!.hitTokens;
    const t0 = performance.now();
    const decode = await decodeRate(engine, prompts, tokens);
    const seconds = (performance.now() - t0) / 1000;
    const hit = engine.stats().prefixCache!.hitTokens - before;
    const kvBytes = n * slotCapacity(context - 1) * bytesPerPosition(manifest.config);
    const kvMs = (kvBytes / (gbPerSecond * 1e9)) * 1000;
    if (context === 64) [short, shortStep, shortKv] = [decode.tokensPerSecond, decode.msPerStep, kvMs];
    const best = shortStep / (shortStep + kvMs - shortKv);
    rows.push([context, n, shared, hit, fmt(seconds, 1), fmt(decode.tokensPerSecond), fmt(decode.msPerStep, 1), `${fmt(kvBytes / 1e9, 2)} GB / ${fmt(kvMs, 1)} ms`, fmt(decode.tokensPerSecond / short, 2), fmt(best, 2)]);
  }
  await engine.close();
  printTable(
    `Decode with long contexts (${n} sequences, ${tokens} decode tokens each; prompt = context - ${tokens})`,
    ['context', 'sequences', 'shared prefix', 'prefix hit tokens', 'wall s', 'decode tok/s', 'ms per step', 'KV read per step / at bandwidth', 'tok/s vs 64', 'best vs 64'],
    rows,
  );
}

/** Expert FFN unit vs a large square MatMul in the same runtime. */
async function expertTable(bundleDir: string, manifest: Manifest): Promise<void> {
  const expert = manifest.units.find((u) => u.kind === 'expert')!;
  const session = await loadUnitSession(join(bundleDir, expert.file));
  const { hidden, intermediate } = manifest.config;
  const ffnRows: (string | number)[][] = [];
  const peak = await matmulGflops(2048);
  for (const tokens of [1, 16, 128]) {
    const x = { data: new Float32Array(tokens * hidden).fill(0.01), dims: [tokens, hidden] };
    const gflop = (2 * tokens * 3 * hidden * intermediate) / 1e9;
    await session.run({ [expert.inputs[0]!.name]: x });
    const iters = tokens === 1 ? 200 : tokens === 16 ? 100 : 30;
    const seconds = await timeIt(async () => {
      for (let i = 0; i < iters; i++) await session.run({ [expert.inputs[0]!.name]: x });
    });
    const rate = (gflop * iters) / seconds;
    ffnRows.push([tokens, fmt((seconds / iters) * 1000, 3), fmt(rate), fmt(rate / peak, 2)]);
  }
  await session.release();
  printTable(`Expert FFN ${hidden}->${intermediate}->${hidden} vs onnxruntime MatMul 2048^3 (${fmt(peak)} GFLOP/s)`, ['tokens', 'ms per call', 'GFLOP/s', 'ratio to MatMul peak'], ffnRows);
  await printDtypeRows();
}

async function matmulGflops(n: number): Promise<number> {
  const g = new GraphBuilder('matmul');
  const a = g.input('a', 'float32', [n, n]);
  const b = g.floatInitializer('b', new Float32Array(n * n).fill(0.5), [n, n]);
  g.output(g.node('MatMul', [a, b], { outputs: ['c'] }), 'float32', [n, n]);
  const session = await loadUnitSession(g.toBytes());
  const x = { data: new Float32Array(n * n).fill(0.25), dims: [n, n] };
  await session.run({ a: x });
  const iters = 10;
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) await session.run({ a: x });
  const seconds = (performance.now() - t0) / 1000;
  await session.release();
  return (2 * n ** 3 * iters) / seconds / 1e9;
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
