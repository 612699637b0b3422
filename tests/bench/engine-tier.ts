/**
 * `pnpm bench:engine-tier`: time to first token and inter-token latency of streaming chat completions through
 * the embedded edge (`serve`) and through the edge in front of the engine tier (`serve --engine-nats` + one
 * `unimoe engine`), each its own process, same bundle, same load, one target at a time. The ratio column is
 * against the embedded edge measured in the same run. BENCH_CLIENTS (default 1,8) concurrent clients,
 * BENCH_REQUESTS (default 16) requests per client count; BENCH_TINY=1 uses the tiny test bundle instead of the
 * benchmark shape; BENCH_EXTRA=name=URL,... adds other edges already serving the same model in front of the
 * same engine tier (e.g. the Worker under `wrangler dev`, given BENCH_NATS_URL for the engine).
 */
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { readManifest } from '@unimoe/shared/bundle/load';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { freePort, startNatsServer } from '../helpers/nats-server';
import { modelFixture } from '../helpers/fixtures';
import { makeTempDir } from '../helpers/tmp';
import { spawnEngine, stopEngine } from '../engine/helpers';
import { realisticBundle } from './realistic-model';
import { streamChat, type StreamStats } from './stream-client';
import { startServeProcess } from './serve-process';
import { fmt, percentile, printTable } from './table';

const CLIENTS = process.env.BENCH_CLIENTS?.split(',').map(Number) ?? [1, 8];
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 16);
const MAX_TOKENS = 16;
const question = (i: number) => `Question ${i}: what is the capital of country number ${i * 7}?`;

/** `requests` streams from `clients` concurrent clients. */
async function load(url: string, model: string, clients: number, requests: number): Promise<StreamStats[]> {
  const out: StreamStats[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < requests) out.push(await streamChat(url, model, question(next++), MAX_TOKENS));
    }),
  );
  return out;
}

async function main() {
  const tmp = await makeTempDir('bench-engine-tier');
  const bundle = process.env.BENCH_TINY ? join(tmp.dir, 'tiny') : await realisticBundle();
  if (process.env.BENCH_TINY) await convertCheckpoint({ checkpointDir: modelFixture('unimoe-4e'), bundleDir: bundle, name: 'tiny-4e' });
  const model = (await readManifest(bundle)).name;
  console.log(`# bench:engine-tier - ${cpus()[0]?.model ?? 'cpu'} x ${availableParallelism()}, bundle ${bundle}, ${MAX_TOKENS} tokens per request, ${REQUESTS} requests per row`);
  const nats = process.env.BENCH_NATS_URL ? undefined : await startNatsServer({ maxPayload: 8 << 20 });
  const natsUrl = process.env.BENCH_NATS_URL ?? nats!.url;
  const engine = spawnEngine(bundle, natsUrl, 'bench');
  const [embeddedPort, tierPort] = [await freePort(), await freePort()];
  const embedded = startServeProcess([bundle], embeddedPort, join(tmp.dir, 'embedded.db'), 300_000);
  const tier = startServeProcess([bundle, '--engine-nats', natsUrl], tierPort, join(tmp.dir, 'tier.db'), 300_000);
  try {
    await Promise.all([engine.ready, embedded.ready, tier.ready]);
    const targets: [string, string][] = [
      ['embedded edge', `http://127.0.0.1:${embeddedPort}`],
      ['edge + engine tier', `http://127.0.0.1:${tierPort}`],
      ...(process.env.BENCH_EXTRA ?? '').split(',').filter(Boolean).map((s) => s.split('=') as [string, string]),
    ];
    for (const [, url] of targets) await load(url, model, 1, 2); // warm-up: first sessions, JIT
    const rows: (string | number)[][] = [];
    for (const clients of CLIENTS) {
      let base = NaN;
      for (const [name, url] of targets) {
        const runs = await load(url, model, clients, REQUESTS);
        const ttft = runs.map((r) => r.ttftMs);
        const gaps = runs.flatMap((r) => r.gapsMs);
        const p50 = percentile(ttft, 50);
        if (name === 'embedded edge') base = p50;
        rows.push([clients, name, fmt(p50), fmt(percentile(ttft, 99)), `${fmt(p50 / base, 2)}x`, fmt(percentile(gaps, 50), 2), fmt(percentile(gaps, 99), 2)]);
      }
    }
    printTable('Streaming chat: TTFT and inter-token latency (ms)', ['clients', 'edge', 'TTFT p50', 'TTFT p99', 'TTFT p50 vs embedded', 'ITL p50', 'ITL p99'], rows);
  } finally {
    for (const s of [embedded, tier]) s.child.kill('SIGKILL');
    await stopEngine(engine, 'SIGKILL');
    await nats?.stop();
    await tmp.cleanup();
  }
}

await main();
