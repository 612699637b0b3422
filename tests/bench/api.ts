/**
 * `pnpm bench:api`: 16 and 64 concurrent streaming clients against the edge API (`unimoe serve` as its
 * own process), embedded and split (two expert pools on NATS). Reports requests/s, time to first token
 * and inter-token latency p50/p99, and API tokens/s over the engine's tokens/s for the same load run
 * directly on the engine (the edge's own overhead: HTTP, validation, templating, SSE, accounting).
 */
import { readFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { readManifest } from '@unimoe/shared/bundle/load';
import { loadSentencePiece, sentencePieceText } from '@unimoe/shared/tokenizer/index';
import { createEngine } from '@unimoe/edge/engine/engine';
import { createNatsExpertBackend } from '@unimoe/edge/dispatch/nats-expert-backend';
import { createChatTokenizer } from '@unimoe/edge/api/prompt';
import { startNatsServer, freePort } from '../helpers/nats-server';
import { makeTempDir } from '../helpers/tmp';
import { spawnWorker } from '../split/cluster';
import { realisticBundle } from './realistic-model';
import { streamChat } from './stream-client';
import { startServeProcess } from './serve-process';
import { fmt, percentile, printTable } from './table';
import { wireModel } from '@unimoe/shared/wire/subjects';

const MAX_TOKENS = 16;
/** Knobs (environment): BENCH_CLIENTS (default 16,64), BENCH_MODES (default embedded,split). */
const CLIENTS = process.env.BENCH_CLIENTS?.split(',').map(Number) ?? [16, 64];
const MODES = (process.env.BENCH_MODES?.split(',') ?? ['embedded', 'split']) as ('embedded' | 'split')[];
const question = (i: number) => `Question ${i}: what is the capital of country number ${i * 7}?`;

/** One streaming chat completion; timings from the bytes as they arrive. */
const streamOnce = (url: string, model: string, i: number) => streamChat(url, model, question(i), MAX_TOKENS);

async function main() {
  const bundleDir = await realisticBundle();
  const manifest = await readManifest(bundleDir);
  const tokenizer = createChatTokenizer(sentencePieceText(loadSentencePiece(new Uint8Array(await readFile(join(bundleDir, manifest.tokenizer.file))))), manifest);
  console.log(`# bench:api - ${cpus()[0]?.model ?? 'cpu'} x ${availableParallelism()}, bundle ${bundleDir}, ${MAX_TOKENS} tokens per request`);
  const tmp = await makeTempDir('bench-api');
  const nats = await startNatsServer();
  const half = manifest.config.experts / 2;
  const workers = [
    spawnWorker([bundleDir, '--pool', 'a', '--experts', `0-${half - 1}`, '--nats', nats.url], { UNIMOE_THREADS: '2' }),
    spawnWorker([bundleDir, '--pool', 'b', '--experts', `${half}-${manifest.config.experts - 1}`, '--nats', nats.url], { UNIMOE_THREADS: '2' }),
  ];
  await Promise.all(workers.map((w) => w.ready));
  const rows: (string | number)[][] = [];
  try {
    for (const mode of MODES) {
      const natsUrl = mode === 'split' ? nats.url : undefined;
      for (const n of CLIENTS) {
        // Engine alone, same prompts and lengths (greedy, no stop strings, so the same tokens).
        const experts = natsUrl ? await createNatsExpertBackend({ natsUrl, model: wireModel(manifest), hidden: manifest.config.hidden }) : undefined;
        const engine = await createEngine({ bundleDir, experts });
        const prompts = Array.from({ length: n }, (_, i) => tokenizer.encodeChat([{ role: 'user', text: question(i), media: [] }]));
        await engine.generate({ promptIds: prompts[0]!, params: { maxTokens: 2, temperature: 0, topP: 1, topK: 0 } });
        const e0 = performance.now();
        const results = await Promise.all(prompts.map((promptIds) => engine.generate({ promptIds, params: { maxTokens: MAX_TOKENS, temperature: 0, topP: 1, topK: 0 } })));
        const engineSeconds = (performance.now() - e0) / 1000;
        const engineTokens = results.reduce((s, r) => s + r.completionTokens, 0);
        await engine.close();
        await experts?.close();

        const port = await freePort();
        const server = startServeProcess(natsUrl ? [bundleDir, '--nats', natsUrl] : [bundleDir], port, join(tmp.dir, `${mode}-${n}.db`));
        try {
          await server.ready;
          const url = `http://127.0.0.1:${port}`;
          await streamOnce(url, manifest.name, 0);
          const a0 = performance.now();
          const streams = await Promise.all(Array.from({ length: n }, (_, i) => streamOnce(url, manifest.name, i)));
          const apiSeconds = (performance.now() - a0) / 1000;
          const apiTokens = streams.reduce((s, r) => s + r.tokens, 0);
          const ttft = streams.map((s) => s.ttftMs);
          const gaps = streams.flatMap((s) => s.gapsMs);
          const apiRate = apiTokens / apiSeconds;
          const engineRate = engineTokens / engineSeconds;
          rows.push([mode, n, fmt(n / apiSeconds, 2), fmt(percentile(ttft, 50), 0), fmt(percentile(ttft, 99), 0), fmt(percentile(gaps, 50), 0), fmt(percentile(gaps, 99), 0), fmt(apiRate), fmt(engineRate), fmt(apiRate / engineRate, 2)]);
        } finally {
          server.child.kill('SIGTERM');
          await new Promise((r) => server.child.once('exit', r));
        }
      }
    }
  } finally {
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
    await nats.stop();
    await tmp.cleanup();
  }
  printTable('Streaming chat completions through the API vs the engine alone', ['mode', 'clients', 'req/s', 'TTFT p50 ms', 'TTFT p99 ms', 'ITL p50 ms', 'ITL p99 ms', 'API tok/s', 'engine tok/s', 'API/engine'], rows);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
