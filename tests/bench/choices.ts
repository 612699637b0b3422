/**
 * `pnpm bench:choices`: what the OpenAI extras cost on the engine, on a mid-size model (hidden 256,
 * 4 layers, 8 experts, vocabulary 32000; written once under .cache/bench).
 * 1. n choices in one request (prompt prefilled once, KV forked) against n separate requests of the
 *    same prompt (prefilled n times), at a long prompt.
 * 2. Decode tokens/s with no extras (the baseline), with logprobs (20 alternatives), with penalties,
 *    and constrained by a JSON schema (XGrammar mask every step).
 */
import { access, readFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { makeTiny } from '@unimoe/shared/tiny/make-tiny';
import { loadTokenizer } from '@unimoe/shared/tokenizer/index';
import { readManifest } from '@unimoe/shared/bundle/load';
import { createEngine } from '@unimoe/edge/engine/engine';
import type { GenerationRequest, SamplingParams } from '@unimoe/edge/engine/types';
import { createXGrammar } from '@unimoe/edge/grammar/xgrammar';
import { BENCH_DIR as DIR } from './realistic-model';
import { fmt, printTable } from './table';

const SHAPE = { hidden: 256, layers: 4, heads: 8, kvHeads: 8, experts: 8, intermediate: 704, vocab: 32000 } as const;
const N = 4;
const PROMPT_LEN = 384;
const NEW_TOKENS = 16;
const DECODE_TOKENS = 48;

/** Runs per measurement; the median is reported (the machine may be shared). */
const RUNS = 3;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const exists = (p: string) => access(p).then(() => true, () => false);

async function bundle(): Promise<string> {
  const checkpointDir = join(DIR, 'choices-h256');
  const bundleDir = join(DIR, 'choices-h256.bundle');
  if (await exists(join(bundleDir, 'manifest.json'))) return bundleDir;
  if (!(await exists(join(checkpointDir, 'config.json')))) await makeTiny(checkpointDir, { layout: 'unimoe-8e', seed: 5, ...SHAPE });
  await convertCheckpoint({ checkpointDir, bundleDir, name: 'bench-choices' });
  return bundleDir;
}

const prompt = (len: number) => [1, ...Array.from({ length: len - 1 }, (_, i) => 3 + ((i * 104729) % 990))];

async function seconds(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

async function main() {
  const bundleDir = await bundle();
  const manifest = await readManifest(bundleDir);
  console.log(`# bench:choices - ${cpus()[0]?.model ?? 'cpu'} x ${availableParallelism()}, ${JSON.stringify(SHAPE)}`);
  const engine = await createEngine({ bundleDir, maxBatch: 16, prefillChunk: 128 });
  const sampled: SamplingParams = { maxTokens: NEW_TOKENS, temperature: 1, topP: 1, topK: 0, seed: 1, stopTokenIds: [] };
  const long = prompt(PROMPT_LEN);
  await engine.generate({ promptIds: long, params: { ...sampled, maxTokens: 2 } }); // warm-up

  const forkedRuns: number[] = [];
  const separateRuns: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    forkedRuns.push(await seconds(() => engine.generate({ promptIds: long, params: sampled, n: N })));
    separateRuns.push(await seconds(() => Promise.all(Array.from({ length: N }, (_, i) => engine.generate({ promptIds: long, params: { ...sampled, seed: i } })))));
  }
  const forked = median(forkedRuns);
  const separate = median(separateRuns);
  printTable(`${N} choices of a ${PROMPT_LEN}-token prompt, ${NEW_TOKENS} tokens each`, ['how', 'seconds', 'vs separate'], [
    [`${N} separate requests (prefill x${N})`, fmt(separate, 2), '1.00'],
    [`one request, n=${N} (prefill once, KV forked)`, fmt(forked, 2), fmt(separate / forked, 2)],
  ]);

  const tokenizer = loadTokenizer(manifest.tokenizer.kind ?? 'sentencepiece', new Uint8Array(await readFile(join(bundleDir, manifest.tokenizer.file))));
  const sampleable = Math.min(manifest.config.vocab, manifest.tokenizer.vocabSize ?? manifest.config.vocab);
  const grammar = await createXGrammar(tokenizer, sampleable, [manifest.tokenizer.eos]);
  const schema = { type: 'object', properties: { words: { type: 'array', items: { type: 'string' } } }, required: ['words'] };
  const compiled = await grammar.compile({ type: 'json_schema', schema });
  const decodeRate = async (extra: () => Promise<Partial<GenerationRequest>>, params: Partial<SamplingParams> = {}) => {
    const rates: number[] = [];
    for (let r = 0; r < RUNS; r++) rates.push(await decodeOnce(await extra(), params));
    return median(rates);
  };
  const decodeOnce = async (extra: Partial<GenerationRequest>, params: Partial<SamplingParams>) => {
    let first = 0;
    let last = 0;
    let count = 0;
    await engine.generate({
      promptIds: prompt(8),
      params: { ...sampled, maxTokens: DECODE_TOKENS, ...params },
      ...extra,
      onToken: () => {
        const now = performance.now();
        if (count++ === 0) first = now;
        last = now;
      },
    });
    return (count - 1) / ((last - first) / 1000);
  };
  const none = async () => ({});
  await decodeOnce({}, {}); // warm-up at the decode shapes
  const base = await decodeRate(none);
  const rows: [string, number][] = [
    ['no extras (baseline)', base],
    ['logprobs, 20 alternatives', await decodeRate(none, { logprobs: 20 })],
    ['presence + frequency + repetition penalties', await decodeRate(none, { presencePenalty: 0.5, frequencyPenalty: 0.5, repetitionPenalty: 1.2 })],
    ['json_schema (XGrammar mask each step)', await decodeRate(async () => ({ constraints: [await compiled.matcher()] }))],
  ];
  printTable(`decode, one sequence, ${DECODE_TOKENS} tokens`, ['sampling', 'tokens/s', 'vs baseline'], rows.map(([name, rate]) => [name, fmt(rate, 1), fmt(rate / base, 2)]));
  grammar.dispose();
  await engine.close();
}

await main();
