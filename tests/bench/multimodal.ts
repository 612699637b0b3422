/**
 * `pnpm bench:multimodal`: time to first token through the API (streamed chat completion, greedy) for
 * text, image, speech (Whisper), audio (BEATs + Q-Former), image+speech and image+speech+audio requests,
 * with the modality encoders placed three ways:
 *   - in-process (embedded: the edge runs the three encoders itself),
 *   - one pool hosting all three (`unimoe worker --encoders vision,speech,audio`, its own process),
 *   - three pools, one per encoder (three processes: one request's modalities encode concurrently).
 * The experts stay in the edge process in all three, so only the encoders move. A real nats-server on
 * loopback with its default 1 MiB max payload (an image's 1.35 MB of pixels goes in two parts).
 * Model: the make-tiny Uni-MoE 4e multimodal checkpoint (real encoder geometry: 336 px images -> 576
 * tokens, 80 x 3000 log-mel -> 50 tokens, 2998 x 128 fbank -> 1496 BEATs patches -> 50 tokens; tiny
 * widths), converted once and cached under .cache/bench/. Pool columns also give p50 / in-process p50.
 * Knobs: BENCH_REPS (measured requests per cell, default 15; one warm-up request each is not counted).
 */
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { run as convertCommand } from '@unimoe/edge/cli/commands/convert';
import { createNatsEncoderBackend, type NatsEncoderBackend } from '@unimoe/edge/dispatch/nats-encoder-backend';
import { startServer } from '@unimoe/edge/serve';
import { readManifest } from '@unimoe/shared/bundle/load';
import { makeTiny } from '@unimoe/shared/tiny/make-tiny';
import { TINY_AUDIO_ALIGNER_DIR, TINY_AUDIO_DIR, TINY_SPEECH_DIR, TINY_VISION_DIR } from '@unimoe/shared/tiny/towers';
import { FIXTURES } from '../helpers/fixtures';
import { startNatsServer } from '../helpers/nats-server';
import { spawnWorker, type WorkerProcess } from '../split/cluster';
import { BENCH_DIR } from './realistic-model';
import { fmt, percentile, printTable } from './table';

const REPS = Number(process.env.BENCH_REPS) || 15;
const MODEL = 'bench-mm';

const exists = (p: string) => access(p).then(() => true, () => false);

async function multimodalBundle(): Promise<string> {
  const checkpoint = `${BENCH_DIR}tiny-mm-3`;
  const bundle = `${BENCH_DIR}tiny-mm-3.bundle`;
  if (await exists(`${bundle}/manifest.json`)) return bundle;
  console.error(`writing the make-tiny multimodal checkpoint to ${checkpoint} and converting it to ${bundle}`);
  await makeTiny(checkpoint, { layout: 'unimoe-4e', multimodal: true, seed: 7 });
  const towers = ['--vision-tower', join(checkpoint, TINY_VISION_DIR), '--speech-tower', join(checkpoint, TINY_SPEECH_DIR)];
  towers.push('--audio-tower', join(checkpoint, TINY_AUDIO_DIR), '--audio-aligner', join(checkpoint, TINY_AUDIO_ALIGNER_DIR));
  const code = await convertCommand([checkpoint, bundle, '--name', MODEL, ...towers, '--quiet']);
  if (code !== 0) throw new Error(`unimoe convert exited with ${code}`);
  return bundle;
}

const b64 = async (name: string) => (await readFile(join(FIXTURES, 'media', name))).toString('base64');

/** The request shapes: content parts of one user message (the same 1.6 s WAV as speech and as audio). */
async function requestKinds(): Promise<Array<[string, unknown[]]>> {
  const image = { type: 'image_url', image_url: { url: `data:image/png;base64,${await b64('rgb_64x48.png')}` } };
  const wav = await b64('speech_16k_s16.wav');
  const speech = { type: 'input_audio', input_audio: { data: wav, format: 'wav', modality: 'speech' } };
  const audio = { type: 'input_audio', input_audio: { data: wav, format: 'wav', modality: 'audio' } };
  const text = { type: 'text', text: 'Describe what you get.' };
  return [
    ['text', [text]],
    ['image', [text, image]],
    ['speech', [text, speech]],
    ['audio', [text, audio]],
    ['image+speech', [text, image, speech]],
    ['image+speech+audio', [text, image, speech, audio]],
  ];
}

/** Milliseconds from sending the request to the first streamed chunk that carries generated text. */
async function timeToFirstToken(url: string, content: unknown[]): Promise<number> {
  const started = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL, temperature: 0, max_tokens: 4, stream: true, messages: [{ role: 'user', content }] }),
  });
  if (!res.ok || !res.body) throw new Error(`chat completion answered ${res.status}: ${await res.text()}`);
  const decoder = new TextDecoder();
  let buffered = '';
  let first: number | undefined;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) {
      if (first !== undefined || !line.startsWith('data: {')) continue;
      const delta = (JSON.parse(line.slice(6)) as { choices: Array<{ delta?: { content?: string } }> }).choices[0]?.delta;
      if (delta?.content) first = performance.now() - started;
    }
  }
  if (first === undefined) throw new Error('the stream carried no generated text');
  return first;
}

interface Placement {
  name: string;
  /** Worker command-line units, one process per entry; none: encoders in the edge process. */
  pools: string[][];
}

const PLACEMENTS: Placement[] = [
  { name: 'in-process', pools: [] },
  { name: 'one pool (vision+speech+audio)', pools: [['--encoders', 'vision,speech,audio']] },
  { name: 'three pools (vision; speech; audio)', pools: [['--encoders', 'vision'], ['--encoders', 'speech'], ['--encoders', 'audio']] },
];

async function main(): Promise<void> {
  const load = loadavg()[0]!; // the cores may be shared: say how busy they were
  const bundle = await multimodalBundle();
  const manifest = await readManifest(bundle);
  const kinds = await requestKinds();
  const nats = await startNatsServer();
  const scratch = await mkdtemp(join(tmpdir(), 'unimoe-bench-mm-'));
  const p50: Record<string, number[]> = Object.fromEntries(kinds.map(([k]) => [k, []]));
  const p90: Record<string, number[]> = Object.fromEntries(kinds.map(([k]) => [k, []]));
  try {
    for (const [i, placement] of PLACEMENTS.entries()) {
      const workers: WorkerProcess[] = placement.pools.map((units, j) => spawnWorker([bundle, '--pool', `enc${i}-${j}`, ...units, '--nats', nats.url]));
      let encoders: NatsEncoderBackend | undefined;
      try {
        await Promise.all(workers.map((w) => w.ready));
        if (workers.length > 0) encoders = await createNatsEncoderBackend({ natsUrl: nats.url, manifest });
        const server = await startServer({
          bundle,
          port: 0,
          host: '127.0.0.1',
          databaseUrl: `file:${join(scratch, `db-${i}.sqlite`)}`,
          api: { noAuth: true, requestsPerMinute: 0, maxConcurrentPerKey: 0, bodyLimitBytes: 8 << 20 },
          ...(encoders ? { encoders } : {}),
        });
        try {
          for (const [kind, content] of kinds) {
            await timeToFirstToken(server.url, content); // warm-up: first runs pay one-time costs
            const times: number[] = [];
            for (let r = 0; r < REPS; r++) times.push(await timeToFirstToken(server.url, content));
            p50[kind]!.push(percentile(times, 50));
            p90[kind]!.push(percentile(times, 90));
            console.error(`[bench] ${placement.name}, ${kind}: p50 ${fmt(percentile(times, 50))} ms`);
          }
        } finally {
          await server.close();
        }
      } finally {
        await encoders?.close();
        for (const w of workers) w.child.kill('SIGTERM');
        await Promise.all(workers.map((w) => w.exited));
      }
    }
  } finally {
    await nats.stop();
    await rm(scratch, { recursive: true, force: true });
  }
  const header = ['request', ...PLACEMENTS.map((p) => p.name)];
  const title = `Time to first token, ms (p50 [p90] of ${REPS} streamed requests; ${MODEL}: make-tiny Uni-MoE 4e, real encoder geometry; experts in the edge; ${availableParallelism()} cores, load ${fmt(load, 2)} at start)`;
  const cell = (kind: string, j: number) => {
    const v = p50[kind]![j]!;
    const ratio = j === 0 ? '' : ` (${fmt(v / p50[kind]![0]!, 2)}x)`;
    return `${fmt(v)} [${fmt(p90[kind]![j]!)}]${ratio}`;
  };
  printTable(title, header, kinds.map(([kind]) => [kind, ...PLACEMENTS.map((_, j) => cell(kind, j))]));
}

await main();
