/**
 * `pnpm bench:workers`: streaming chat completions through the Worker (`wrangler dev`, local workerd) and
 * through the Node edge in front of the engine tier (`unimoe serve --engine-nats`), both on the same
 * `unimoe engine` process and nats-server, same prompts and load: time to first token and inter-token
 * latency p50/p90, and the Worker's figures over the Node edge's. Two bundles: the tiny multimodal one (the
 * engine is nearly free, so the edges' own costs show) and the realistic benchmark shape.
 * Knobs (environment): BENCH_CLIENTS (default 1,8), BENCH_ROUNDS (rounds of `clients` concurrent requests, default 4),
 * BENCH_MODELS (default tiny,realistic). Run under the shared lock: `flock /tmp/unimoe-bench.lock pnpm bench:workers`.
 */
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { readManifest } from '@unimoe/shared/bundle/load';
import { spawnEngine, stopEngine } from '../engine/helpers';
import { startNatsServer, freePort } from '../helpers/nats-server';
import { makeTempDir } from '../helpers/tmp';
import { buildMultimodalBundle } from '../multimodal/setup';
import { startWorkerDev } from '../workers/wrangler-dev';
import { realisticBundle } from './realistic-model';
import { streamChat, type StreamStats } from './stream-client';
import { startServeProcess } from './serve-process';
import { fmt, percentile, printTable } from './table';

const MAX_TOKENS = 16;
const CLIENTS = process.env.BENCH_CLIENTS?.split(',').map(Number) ?? [1, 8];
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4);
const MODELS = process.env.BENCH_MODELS?.split(',') ?? ['tiny', 'realistic'];
const question = (i: number) => `Question ${i}: what is the capital of country number ${i * 7}?`;

/** One round: `clients` concurrent streaming requests. */
const round = (url: string, model: string, clients: number, r: number): Promise<StreamStats[]> =>
  Promise.all(Array.from({ length: clients }, (_, c) => streamChat(url, model, question(r * clients + c), MAX_TOKENS)));

async function benchModel(which: string, tmpDir: string, rows: (string | number)[][]): Promise<void> {
  const bundle = which === 'tiny' ? (await buildMultimodalBundle(join(tmpDir, 'tiny'))).bundle : await realisticBundle();
  const manifest = await readManifest(bundle);
  const wsPort = await freePort();
  const nats = await startNatsServer({ config: `websocket { host: 127.0.0.1, port: ${wsPort}, no_tls: true }\n` });
  const engine = spawnEngine(bundle, nats.url, `bench-${which}`);
  const nodePort = await freePort();
  const node = startServeProcess([bundle, '--engine-nats', nats.url], nodePort, join(tmpDir, `${which}.db`));
  const worker = await startWorkerDev({ vars: { NATS_WS_URL: `ws://127.0.0.1:${wsPort}`, MODEL: manifest.name, NO_AUTH: 'true', REQUESTS_PER_MINUTE: '0', MAX_CONCURRENT_PER_KEY: '0' } });
  try {
    await engine.ready;
    await node.ready;
    const edges = [
      ['Node edge (serve --engine-nats)', `http://127.0.0.1:${nodePort}`],
      ['Worker (wrangler dev)', worker.url],
    ] as const;
    for (const [, url] of edges) await streamChat(url, manifest.name, question(0), 2);
    for (const clients of CLIENTS) {
      const stats: Record<string, { ttft: number[]; itl: number[] }> = Object.fromEntries(edges.map(([name]) => [name, { ttft: [], itl: [] }]));
      // Rounds alternate between the edges, so drifts of the shared machine hit both alike.
      for (let r = 0; r < ROUNDS; r++) {
        for (const [name, url] of edges) {
          const runs = await round(url, manifest.name, clients, r);
          stats[name]!.ttft.push(...runs.map((s) => s.ttftMs));
          stats[name]!.itl.push(...runs.flatMap((s) => s.gapsMs));
        }
      }
      const base = stats[edges[0][0]]!;
      for (const [name] of edges) {
        const s = stats[name]!;
        const ratio = (mine: number[], theirs: number[], p: number) => fmt(percentile(mine, p) / percentile(theirs, p), 2);
        rows.push([which, clients, name, fmt(percentile(s.ttft, 50)), fmt(percentile(s.ttft, 90)), fmt(percentile(s.itl, 50), 2), fmt(percentile(s.itl, 90), 2),
          ratio(s.ttft, base.ttft, 50), ratio(s.itl, base.itl, 50)]);
      }
    }
  } finally {
    await worker.stop();
    node.child.kill('SIGTERM');
    await new Promise((r) => node.child.once('exit', r));
    await stopEngine(engine);
    await nats.stop();
  }
}

async function main() {
  console.log(`# bench:workers - ${cpus()[0]?.model ?? 'cpu'} x ${availableParallelism()}, ${MAX_TOKENS} tokens per request, ${ROUNDS} rounds per load, one engine`);
  const tmp = await makeTempDir('bench-workers');
  const rows: (string | number)[][] = [];
  try {
    for (const which of MODELS) await benchModel(which, tmp.dir, rows);
  } finally {
    await tmp.cleanup();
  }
  printTable('Streaming chat completions: the Worker vs the Node edge on the same engine tier', ['bundle', 'clients', 'edge', 'TTFT p50 ms', 'TTFT p90 ms', 'ITL p50 ms', 'ITL p90 ms', 'TTFT p50 / Node', 'ITL p50 / Node'], rows);
}

await main();
