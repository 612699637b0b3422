/**
 * `pnpm bench:engine`: the single-process engine on the realistic benchmark model.
 * Load time; prefill and decode tokens/s at 1, 8 and 32 concurrent sequences; the expert FFN unit's
 * GFLOP/s at 1, 16 and 128 tokens next to onnxruntime's own large-matmul GFLOP/s on this machine;
 * then the weight-dtype rows (./dtypes.ts).
 */
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { readManifest } from '@unimoe/shared/bundle/load';
import { loadUnitSession } from '@unimoe/shared/runtime/ort-unit';
import { GraphBuilder } from '@unimoe/shared/onnx/graph';
import { createEngine } from '@unimoe/edge/engine/engine';
import { realisticBundle, REALISTIC } from './realistic-model';
import { fmt, printTable } from './table';
import { printDtypeRows } from './dtypes';

const PROMPT_LEN = 128;
const DECODE_TOKENS = 32;

function prompt(seq: number, len: number): number[] {
  // Deterministic, distinct prompts (ids within the tokenizer's range are irrelevant to speed).
  return [1, ...Array.from({ length: len - 1 }, (_, i) => 3 + ((seq * 7919 + i * 104729) % (REALISTIC.vocab - 3)))];
}

async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

async function main() {
  const bundleDir = await realisticBundle();
  const manifest = await readManifest(bundleDir);
  console.log(`# bench:engine - ${cpus()[0]?.model ?? 'cpu'} x ${availableParallelism()}, bundle ${bundleDir}`);

  const loadSeconds = await timeIt(async () => (await createEngine({ bundleDir, maxBatch: 64 })).close());
  const engine = await createEngine({ bundleDir, maxBatch: 64 });
  const greedy = { temperature: 0, topP: 1, topK: 0 };
  // Warm up every session, at the prompt length measured too (the first large run grows onnxruntime's arenas).
  await engine.generate({ promptIds: prompt(0, PROMPT_LEN), params: { ...greedy, maxTokens: 2 } });

  const rows: (string | number)[][] = [];
  for (const n of [1, 8, 32]) {
    // Prefill: n prompts of PROMPT_LEN tokens, one generated token each.
    const prefillSeconds = await timeIt(() =>
      Promise.all(Array.from({ length: n }, (_, s) => engine.generate({ promptIds: prompt(s, PROMPT_LEN), params: { ...greedy, maxTokens: 1 } }))),
    );
    // Decode: time between each sequence's first and last token, over all sequences together.
    let firstToken = Infinity;
    let lastToken = 0;
    let decoded = 0;
    await Promise.all(
      Array.from({ length: n }, (_, s) => {
        let count = 0;
        return engine.generate({
          promptIds: prompt(100 + s, 16),
          params: { ...greedy, maxTokens: DECODE_TOKENS, stopTokenIds: [] },
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
    const decodeSeconds = (lastToken - firstToken) / 1000;
    rows.push([n, fmt((n * PROMPT_LEN) / prefillSeconds), fmt(decoded / decodeSeconds), fmt((decodeSeconds / (decoded / n)) * 1000, 2)]);
  }
  await engine.close();
  printTable(`Engine (load ${fmt(loadSeconds, 2)} s, prompt ${PROMPT_LEN} tokens, ${DECODE_TOKENS} decode tokens per sequence)`, ['sequences', 'prefill tok/s', 'decode tok/s', 'ms per decode step'], rows);

  // Expert FFN unit vs a large square MatMul in the same runtime.
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

/** onnxruntime's own large-matmul throughput: one MatMul of two n x n float32 matrices. */
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
