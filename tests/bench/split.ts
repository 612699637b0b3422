/**
 * `pnpm bench:split`: the split system against the single-process engine on the realistic bundle, in
 * one run. A real nats-server on a loopback port; two pools with disjoint experts (0-3 and 4-7) as
 * worker processes; the split engines' edges run in this process, one sending a message per (layer,
 * expert) batch (before layer groups), one a message per (layer, pool) (layer groups, the default). Prints:
 *   - generated tokens/s, single vs both splits, at 1, 16 and 64 concurrent sequences (greedy, same prompts);
 *   - per-layer dispatch latency next to a bare NATS request-reply of the same messages (echo
 *     processes on the same server), and the workers' own compute per layer;
 *   - messages and bytes on the wire per generated token, for both splits.
 * Knobs (environment): BENCH_WORKER_THREADS (onnxruntime threads per worker, default 1),
 * BENCH_EDGE_THREADS (default: all cores), BENCH_WIRE_DTYPE (f32 | f16 | bf16, default f32),
 * BENCH_SEQUENCES (concurrency levels, default 1,16,64), BENCH_ROUNDS (alternating runs per level, best kept; default 2),
 * BENCH_SPLIT_MODES (which splits to run: expert, pool or both, default expert,pool), BENCH_MAX_PAYLOAD
 * (nats-server's max_payload in bytes; default 8 MiB, what infra/nats/nats.conf sets and docs/wire.md recommends).
 */
import type { ChildProcess } from 'node:child_process';
import { spawnTied } from '@unimoe/shared/runtime/tied-child';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { connect, headers as natsHeaders, type NatsConnection } from 'nats';
import { readManifest } from '@unimoe/shared/bundle/load';
import { isWireDType, WIRE_HEADERS, WIRE_VERSION } from '@unimoe/shared/wire/format';
import { createNatsExpertBackend, type NatsExpertBackend, type WireStats } from '@unimoe/edge/dispatch/nats-expert-backend';
import { createEngine, type Engine } from '@unimoe/edge/engine/engine';
import { LocalExpertBackend } from '@unimoe/edge/engine/local-experts';
import { startNatsServer } from '../helpers/nats-server';
import { REPO, spawnWorker, type WorkerProcess } from '../split/cluster';
import { realisticBundle, REALISTIC } from './realistic-model';
import { criticalComputeMs, LayerRecorder, poolImbalanceMs, type LayerRecord } from './split-recorder';
import { fmt, percentile, printTable } from './table';
import { wireModel } from '@unimoe/shared/wire/subjects';

const PROMPT_LEN = 32;
const GEN_TOKENS = 32;
const CONCURRENCY = process.env.BENCH_SEQUENCES?.split(',').map(Number) ?? [1, 16, 64];
const POOLS = [
  { name: 'a', experts: '0-3', hosts: (e: number) => e <= 3 },
  { name: 'b', experts: '4-7', hosts: (e: number) => e >= 4 },
];
const CORES = availableParallelism();
const WORKER_THREADS = Number(process.env.BENCH_WORKER_THREADS) || 1;
const EDGE_THREADS = Number(process.env.BENCH_EDGE_THREADS) || CORES;
const WIRE_DTYPE = process.env.BENCH_WIRE_DTYPE ?? 'f32';
const GREEDY = { temperature: 0, topP: 1, topK: 0 };
/** Bare round trips replayed per concurrency level (sampled from the recorded decode layers). */
const BARE_SAMPLES = 400;
const ROUNDS = Number(process.env.BENCH_ROUNDS) || 2;
const MODES = process.env.BENCH_SPLIT_MODES?.split(',') ?? ['expert', 'pool'];
const MAX_PAYLOAD = Number(process.env.BENCH_MAX_PAYLOAD ?? 8 * 1024 * 1024);

function prompt(seq: number): number[] {
  return [1, ...Array.from({ length: PROMPT_LEN - 1 }, (_, i) => 3 + ((seq * 7919 + i * 104729) % (REALISTIC.vocab - 3)))];
}

/** n sequences at once; generated tokens/s over the whole run (prefill included) and the ids. */
async function generateAll(engine: Engine, n: number): Promise<{ seconds: number; tokensPerSecond: number; ids: number[][] }> {
  const t0 = performance.now();
  const results = await Promise.all(
    Array.from({ length: n }, (_, s) => engine.generate({ promptIds: prompt(s), params: { ...GREEDY, maxTokens: GEN_TOKENS, stopTokenIds: [] } })),
  );
  const seconds = (performance.now() - t0) / 1000;
  const tokens = results.reduce((sum, r) => sum + r.ids.length, 0);
  return { seconds, tokensPerSecond: tokens / seconds, ids: results.map((r) => r.ids) };
}

/** The pool a unit (`layer0.expert5`) or layer group (`layer0.experts.4-7`) request went to. */
const poolOfUnit = (unit: string): string => {
  const expert = Number(/\.experts?\.?(\d+)/.exec(unit)?.[1]);
  return POOLS.find((p) => p.hosts(expert))!.name;
};
const echoSubject = (pool: string) => `unimoe-bench.echo.${pool}`;

function spawnEcho(natsUrl: string, pool: string): { child: ChildProcess; ready: Promise<void> } {
  const child = spawnTied(process.execPath, ['--import', 'tsx', join(REPO, 'tests', 'bench', 'split-echo.ts'), natsUrl, echoSubject(pool)], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => /echo ready/.test(d.toString()) && resolve());
    child.once('exit', (code) => reject(new Error(`echo responder for pool ${pool} exited (${code}) before it was ready`)));
  });
  return { child, ready };
}

/**
 * Replays recorded layers against the echo responders: the same messages (sizes, wire headers, pools),
 * all sent at once, timed until the last reply is in.
 */
async function bareRoundTrips(nc: NatsConnection, layers: LayerRecord[], hidden: number): Promise<number[]> {
  const step = Math.max(1, Math.floor(layers.length / BARE_SAMPLES));
  const times: number[] = [];
  const bodies = new Map<number, Uint8Array>();
  const body = (bytes: number) => bodies.get(bytes) ?? bodies.set(bytes, new Uint8Array(bytes).fill(7)).get(bytes)!;
  for (let i = 0; i < layers.length; i += step) {
    const messages = layers[i].replies.map((r) => {
      const h = natsHeaders();
      h.set(WIRE_HEADERS.version, WIRE_VERSION);
      h.set(WIRE_HEADERS.dtype, WIRE_DTYPE);
      h.set(WIRE_HEADERS.shape, `${r.rows},${hidden}`);
      h.set(WIRE_HEADERS.requestId, `${r.unit}-${i.toString(36)}`);
      return { subject: echoSubject(poolOfUnit(r.unit)), data: body(r.requestBytes), headers: h };
    });
    const t0 = performance.now();
    await Promise.all(messages.map((m) => nc.request(m.subject, m.data, { timeout: 10_000, headers: m.headers })));
    times.push(performance.now() - t0);
  }
  return times;
}

function wireDelta(a: WireStats, b: WireStats): WireStats {
  return { inMsgs: b.inMsgs - a.inMsgs, outMsgs: b.outMsgs - a.outMsgs, inBytes: b.inBytes - a.inBytes, outBytes: b.outBytes - a.outBytes };
}

async function main() {
  if (CONCURRENCY.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`BENCH_SEQUENCES must list positive integers, got ${process.env.BENCH_SEQUENCES}`);
  if (MODES.length === 0 || MODES.some((m) => m !== 'expert' && m !== 'pool')) throw new Error(`BENCH_SPLIT_MODES must list expert and/or pool, got ${process.env.BENCH_SPLIT_MODES}`);
  if (!Number.isInteger(MAX_PAYLOAD) || MAX_PAYLOAD < 65536) throw new Error(`BENCH_MAX_PAYLOAD must be a byte count of at least 65536, got ${process.env.BENCH_MAX_PAYLOAD}`);
  if (!isWireDType(WIRE_DTYPE)) throw new Error(`BENCH_WIRE_DTYPE must be f32, f16 or bf16, got ${JSON.stringify(WIRE_DTYPE)}`);
  const bundleDir = await realisticBundle();
  const manifest = await readManifest(bundleDir);
  const { hidden, routing } = manifest.config;
  console.log(`# bench:split - ${cpus()[0]?.model ?? 'cpu'}, ${CORES} cores (load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} at start)`);
  console.log(
    `# bundle ${bundleDir}; prompts ${PROMPT_LEN} tokens, ${GEN_TOKENS} generated per sequence, greedy; ` +
      `onnxruntime threads: edge/single ${EDGE_THREADS}, each worker ${WORKER_THREADS}; wire ${WIRE_DTYPE}; ` +
      `nats-server max_payload ${MAX_PAYLOAD} bytes`,
  );

  const nats = await startNatsServer({ maxPayload: MAX_PAYLOAD });
  const children: ChildProcess[] = [];
  const engines: Engine[] = [];
  let echoNc: NatsConnection | undefined;
  const backends: NatsExpertBackend[] = [];
  let localExperts: LocalExpertBackend | undefined;
  try {
    const workers: WorkerProcess[] = POOLS.map((p) =>
      spawnWorker([bundleDir, '--pool', p.name, '--experts', p.experts, '--nats', nats.url], { UNIMOE_THREADS: String(WORKER_THREADS) }),
    );
    const echoes = POOLS.map((p) => spawnEcho(nats.url, p.name));
    children.push(...workers.map((w) => w.child), ...echoes.map((e) => e.child));
    await Promise.all([...workers.map((w) => w.ready), ...echoes.map((e) => e.ready)]);
    echoNc = await connect({ servers: nats.url, name: 'unimoe-bench-bare' });

    const maxBatch = Math.max(...CONCURRENCY);
    const session = { threads: EDGE_THREADS };
    // Two split edges on the same pools: per-expert messages (layer groups off) and per-pool messages.
    const modes = [
      { key: 'expert', name: 'split, message per (layer, expert)', layerGroups: false },
      { key: 'pool', name: 'split, message per (layer, pool)', layerGroups: true },
    ].filter((m) => MODES.includes(m.key));
    const splits: Array<{ name: string; engine: Engine; recorder: LayerRecorder; backend: NatsExpertBackend }> = [];
    for (const mode of modes) {
      const recorder = new LayerRecorder(routing.topK);
      const b = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(manifest), hidden, dtype: WIRE_DTYPE, observe: recorder.observe, layerGroups: mode.layerGroups });
      backends.push(b);
      const engine = await createEngine({ bundleDir, experts: recorder.wrap(b), maxBatch, session });
      engines.push(engine);
      splits.push({ name: mode.name, engine, recorder, backend: b });
    }
    localExperts = await LocalExpertBackend.open(bundleDir, { eager: true, session }, manifest);
    const singleRecorder = new LayerRecorder(routing.topK);
    const single = await createEngine({ bundleDir, maxBatch, experts: singleRecorder.wrap(localExperts), session });
    engines.push(single);
    for (const e of [single, ...splits.map((x) => x.engine)]) await generateAll(e, 8); // first runs of every session and shape
    for (const r of [singleRecorder, ...splits.map((x) => x.recorder)]) r.take();

    const speedRows: (string | number)[][] = [];
    const latencyRows: (string | number)[][] = [];
    const wireRows: (string | number)[][] = [];
    const timeRows: (string | number)[][] = [];
    for (const n of CONCURRENCY) {
      // Alternating rounds, best of each: on a shared machine the least disturbed run is the closest to
      // what the code can do, and alternation exposes every engine to the same background load.
      type Run = Awaited<ReturnType<typeof generateAll>> & { layers: LayerRecord[] };
      const best: Array<Run | undefined> = [undefined, ...splits.map(() => undefined)];
      const layers: LayerRecord[][] = splits.map(() => []);
      const tokens = splits.map(() => 0);
      const w0 = splits.map((x) => x.backend.wireStats());
      const s0 = splits.map((x) => x.backend.stats());
      for (let round = 0; round < ROUNDS; round++) {
        for (const [i, engine] of [single, ...splits.map((x) => x.engine)].entries()) {
          const recorder = i === 0 ? singleRecorder : splits[i - 1]!.recorder;
          const run = { ...(await generateAll(engine, n)), layers: recorder.take() };
          if (i > 0) {
            layers[i - 1]!.push(...run.layers);
            tokens[i - 1]! += run.ids.reduce((sum, ids) => sum + ids.length, 0);
          }
          if (!best[i] || run.seconds < best[i]!.seconds) best[i] = run;
        }
      }
      const one = best[0]!;
      for (const [i, name] of ['single', ...splits.map((x) => x.name)].entries()) {
        const run = best[i]!;
        const sum = (ls: readonly LayerRecord[]) => ls.reduce((s, l) => s + l.ms, 0) / 1000;
        const prefill = sum(run.layers.filter((l) => l.rows > n));
        const decodeExperts = sum(run.layers.filter((l) => l.rows <= n));
        timeRows.push([n, name, fmt(run.seconds, 2), fmt(prefill, 2), fmt(decodeExperts, 2), fmt(run.seconds - prefill - decodeExperts, 2)]);
      }
      const same = (run: Run) => `${one.ids.filter((ids, s) => ids.join() === run.ids[s]!.join()).length}/${n}`;
      speedRows.push([
        n,
        fmt(one.tokensPerSecond),
        ...splits.flatMap((_, i) => [fmt(best[i + 1]!.tokensPerSecond), fmt(best[i + 1]!.tokensPerSecond / one.tokensPerSecond, 2), same(best[i + 1]!)]),
      ]);

      for (const [i, split] of splits.entries()) {
        // Decode steps (every step token is one sequence's next token) and prompt steps, apart.
        for (const [steps, picked] of [
          ['decode', layers[i]!.filter((l) => l.rows <= n)],
          ['prompt', layers[i]!.filter((l) => l.rows > n)],
        ] as const) {
          if (picked.length === 0) continue;
          const dispatch = picked.map((l) => l.ms);
          const compute = picked.map((l) => criticalComputeMs(l, poolOfUnit));
          const overhead = picked.map((l, k) => l.ms - compute[k]!);
          const imbalance = picked.map((l) => poolImbalanceMs(l, poolOfUnit, POOLS.map((p) => p.name)));
          const bare = await bareRoundTrips(echoNc, picked, hidden);
          const msgs = picked.map((l) => l.replies.length);
          const bytes = picked.map((l) => l.replies.reduce((s, r) => s + r.requestBytes, 0));
          latencyRows.push([
            n,
            split.name,
            steps,
            picked.length,
            `${fmt(percentile(msgs, 50), 0)} / ${fmt(percentile(bytes, 50) / 1024, 0)} KiB`,
            `${fmt(percentile(dispatch, 50), 2)} / ${fmt(percentile(dispatch, 99), 2)}`,
            `${fmt(percentile(compute, 50), 2)} / ${fmt(percentile(compute, 99), 2)}`,
            `${fmt(percentile(imbalance, 50), 2)} / ${fmt(percentile(imbalance, 99), 2)}`,
            `${fmt(percentile(overhead, 50), 2)} / ${fmt(percentile(overhead, 99), 2)}`,
            `${fmt(percentile(bare, 50), 2)} / ${fmt(percentile(bare, 99), 2)}`,
            fmt(percentile(overhead, 50) / percentile(bare, 50), 2),
          ]);
        }
        const wire = wireDelta(w0[i]!, split.backend.wireStats());
        const kib = (wire.inBytes + wire.outBytes) / 1024;
        const resends = split.backend.stats().hedges - s0[i]!.hedges;
        wireRows.push([n, split.name, tokens[i]!, wire.outMsgs, wire.inMsgs, resends, fmt((wire.outMsgs + wire.inMsgs) / tokens[i]!, 2), fmt(kib / tokens[i]!, 1), fmt(kib / 1024, 1)]);
      }
    }

    printTable(
      `Generated tokens/s (best of ${ROUNDS} alternating runs), single process vs split (edge here + pools a: experts 0-3, b: 4-7), ${PROMPT_LEN}-token prompts + ${GEN_TOKENS} tokens each`,
      ['sequences', 'single tok/s', ...splits.flatMap((x) => [`${x.name} tok/s`, 'split/single', 'identical greedy ids'])],
      speedRows,
    );
    printTable(
      'Where the time goes (the best run above): wall seconds, of which waiting for experts (prefill step / decode steps), and the rest (edge: embed, attention, routing, head, sampling)',
      ['sequences', 'engine', 'total s', 'experts, prefill s', 'experts, decode s', 'rest s'],
      timeRows,
    );
    printTable(
      'Per-layer expert dispatch in decode and prompt steps, ms p50 / p99 (dispatch: first batch sent -> every reply decoded; compute: slowest pool\'s onnxruntime time from Unimoe-Compute-Us; bare: the same messages to echo processes)',
      ['sequences', 'engine', 'steps', 'layers', 'msgs / bytes per layer (p50)', 'dispatch', 'worker compute', 'slowest - fastest pool compute', 'dispatch - compute', 'bare NATS round trip', '(dispatch - compute) / bare, p50'],
      latencyRows,
    );
    printTable(
      'Expert traffic on the edge\'s NATS connection (requests out, replies in; payload + headers), per generated token (prefill included)',
      ['sequences', 'engine', 'generated tokens', 'messages out', 'messages in', 'of which re-sends (hedges)', 'messages / token', 'KiB / token', 'MiB total'],
      wireRows,
    );
    console.log(`\n# load average at end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  } finally {
    for (const e of engines) await e.close().catch(() => undefined);
    for (const b of backends) await b.close();
    await localExperts?.close();
    await echoNc?.close();
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
    await nats.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
