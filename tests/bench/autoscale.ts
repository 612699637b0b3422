/**
 * `pnpm bench:autoscale`: the load schedule 1 -> 32 -> 1 -> 0 streaming clients against the edge with
 * two expert pools, once autoscaled (min 0, max 3 per pool; process driver) and once fixed at the max
 * (3 replicas per pool) as the baseline. Prints per phase replicas, TTFT and ITL p50/p99, tokens/s;
 * scale-up reaction time (load step -> a new replica serving), cold start from zero, and tokens per
 * replica-second of both deployments; writes an SVG plot of replicas and TTFT over time.
 * Knobs: BENCH_PHASE_S (default 15,30,20,15), BENCH_TARGET_TOKENS (expert rows/s per replica, default 2500).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import * as echarts from 'echarts';
import { makeTiny } from '@unimoe/shared/tiny/make-tiny';
import { deploy, type Deployment } from '../autoscale/harness';
import { BENCH_DIR } from './realistic-model';
import { streamChat } from './stream-client';
import { fmt, percentile, printTable } from './table';

const PHASE_S = (process.env.BENCH_PHASE_S ?? '15,30,20,15').split(',').map(Number);
const SCHEDULE = [1, 32, 1, 0].map((clients, i) => ({ clients, seconds: PHASE_S[i] ?? 15 }));
const TARGET_TOKENS = Number(process.env.BENCH_TARGET_TOKENS ?? 2500);
const MAX_TOKENS = 16;
const MAX_REPLICAS = 3;
/** A small model: 4 layers, 4 experts, hidden 128 (the schedule must finish in minutes on 2 shared cores). */
const DIMS = { hidden: 128, layers: 4, heads: 4, kvHeads: 4, experts: 4, intermediate: 384, vocab: 1000 };

interface RequestRecord {
  phase: number;
  /** Seconds since the schedule started, when the request finished. */
  at: number;
  ttftMs: number;
  gapsMs: number[];
  tokens: number;
}

interface Sample {
  at: number;
  running: number;
  ready: number;
}

interface RunResult {
  requests: RequestRecord[];
  samples: Sample[];
  phaseStarts: number[];
  end: number;
  reactionS: number;
}

async function runSchedule(d: Deployment, label: string): Promise<RunResult> {
  const edge = d.edge!;
  const t0 = performance.now();
  const now = () => (performance.now() - t0) / 1000;
  const requests: RequestRecord[] = [];
  const samples: Sample[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const [running, ready] = await Promise.all([d.driver.list(), d.observer.replicas()]);
      samples.push({ at: now(), running: running.length, ready: ready.length });
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  const phaseStarts: number[] = [];
  try {
    for (const [phase, { clients, seconds }] of SCHEDULE.entries()) {
      phaseStarts.push(now());
      console.error(`[bench:autoscale] ${label}: phase ${phase + 1}, ${clients} clients for ${seconds} s`);
      const until = performance.now() + seconds * 1000;
      await Promise.all(
        Array.from({ length: clients }, async (_, c) => {
          for (let i = 0; performance.now() < until; i++) {
            const s = await streamChat(edge.url, d.manifest.name, `Client ${c} asks question ${i} about mixtures of experts.`, MAX_TOKENS);
            requests.push({ phase, at: now(), ...s });
          }
        }),
      );
      if (clients === 0) await new Promise((r) => setTimeout(r, seconds * 1000));
    }
  } finally {
    sampling = false;
    await sampler;
  }
  const end = now();
  // Reaction: from the 32-client step to the first sample with more ready replicas than at the step.
  const step = phaseStarts[1]!;
  const before = samples.filter((s) => s.at <= step).at(-1)?.ready ?? 0;
  const grown = samples.find((s) => s.at > step && s.ready > before);
  return { requests, samples, phaseStarts, end, reactionS: grown ? grown.at - step : NaN };
}

/** Replica-seconds: the integral of running replicas over the schedule (step function between samples). */
function replicaSeconds(r: RunResult, from = 0, to = r.end): number {
  let sum = 0;
  for (let i = 0; i < r.samples.length; i++) {
    const a = Math.max(from, r.samples[i]!.at);
    const b = Math.min(to, r.samples[i + 1]?.at ?? r.end);
    if (b > a) sum += r.samples[i]!.running * (b - a);
  }
  return sum;
}

function phaseRows(r: RunResult): (string | number)[][] {
  return SCHEDULE.map(({ clients }, phase) => {
    const from = r.phaseStarts[phase]!;
    const to = r.phaseStarts[phase + 1] ?? r.end;
    const reqs = r.requests.filter((q) => q.phase === phase);
    const inPhase = r.samples.filter((s) => s.at >= from && s.at < to).map((s) => s.running);
    const ttft = reqs.map((q) => q.ttftMs);
    const itl = reqs.flatMap((q) => q.gapsMs);
    const tokens = reqs.reduce((s, q) => s + q.tokens, 0);
    const replicas = inPhase.length ? `${Math.min(...inPhase)}-${Math.max(...inPhase)} (mean ${fmt(replicaSeconds(r, from, to) / (to - from))})` : '-';
    return [`${phase + 1}: ${clients} clients`, replicas, fmt(percentile(ttft, 50), 0), fmt(percentile(ttft, 99), 0), fmt(percentile(itl, 50), 1), fmt(percentile(itl, 99), 1), fmt(tokens / (to - from))];
  });
}

function plot(auto: RunResult, fixed: RunResult): string {
  const chart = echarts.init(null, null, { renderer: 'svg', ssr: true, width: 960, height: 480 });
  chart.setOption({
    animation: false,
    title: { text: 'bench:autoscale - schedule 1 -> 32 -> 1 -> 0 clients', left: 'center', textStyle: { fontSize: 14 } },
    legend: { top: 28 },
    grid: { left: 60, right: 70, top: 70, bottom: 50 },
    xAxis: { type: 'value', name: 'seconds', nameLocation: 'middle', nameGap: 28 },
    yAxis: [
      { type: 'value', name: 'replicas', minInterval: 1 },
      { type: 'log', name: 'TTFT ms', position: 'right' },
    ],
    series: [
      { name: 'replicas (autoscaled)', type: 'line', step: 'end', showSymbol: false, data: auto.samples.map((s) => [+s.at.toFixed(2), s.running]) },
      { name: 'ready replicas (autoscaled)', type: 'line', step: 'end', showSymbol: false, lineStyle: { type: 'dashed' }, data: auto.samples.map((s) => [+s.at.toFixed(2), s.ready]) },
      { name: 'replicas (fixed)', type: 'line', step: 'end', showSymbol: false, data: fixed.samples.map((s) => [+s.at.toFixed(2), s.running]) },
      { name: 'TTFT (autoscaled)', type: 'scatter', yAxisIndex: 1, symbolSize: 3, data: auto.requests.map((q) => [+q.at.toFixed(2), Math.max(1, Math.round(q.ttftMs))]) },
      { name: 'TTFT (fixed)', type: 'scatter', yAxisIndex: 1, symbolSize: 3, data: fixed.requests.map((q) => [+q.at.toFixed(2), Math.max(1, Math.round(q.ttftMs))]) },
    ],
  });
  const svg = chart.renderToSVGString();
  chart.dispose();
  return svg;
}

async function main(): Promise<void> {
  const checkpoint = join(BENCH_DIR, 'autoscale-small');
  await mkdir(BENCH_DIR, { recursive: true });
  await makeTiny(checkpoint, { layout: 'unimoe-4e', seed: 5, ...DIMS });
  console.log(`# bench:autoscale - ${cpus()[0]?.model ?? 'cpu'} x ${availableParallelism()}, model ${JSON.stringify(DIMS)}, ${MAX_TOKENS} tokens per request`);
  console.log(`schedule: ${SCHEDULE.map((p) => `${p.clients} clients x ${p.seconds} s`).join(', ')}; target ${TARGET_TOKENS} expert rows/s per replica`);
  const quiet = (line: string) => console.error(line);
  const common = { pools: ['a=0-1', 'b=2-3'], edge: true, checkpoint, log: quiet, statsWindowMs: 3000 };
  const policy = { targetTokensPerSecond: TARGET_TOKENS, targetBusyFraction: 0.6, scaleDownStabilizationMs: 5000, scaleUpCooldownMs: 2000, idleToZeroMs: 5000 };

  const results: { auto?: RunResult; fixed?: RunResult; coldMs?: number; warmMs?: number } = {};
  const auto = await deploy({ ...common, limits: { a: [0, MAX_REPLICAS], b: [0, MAX_REPLICAS] }, policy });
  try {
      results.auto = await runSchedule(auto, 'autoscaled');
      // Cold start: wait for both pools at zero, then one request (its TTFT includes starting the replicas).
      const deadline = Date.now() + 60_000;
      while ((await auto.driver.list()).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
      if ((await auto.driver.list()).length > 0) throw new Error('the pools did not scale to zero within 60 s after the schedule');
      results.coldMs = (await streamChat(auto.edge!.url, auto.manifest.name, 'A cold question.', MAX_TOKENS)).ttftMs;
      results.warmMs = (await streamChat(auto.edge!.url, auto.manifest.name, 'A warm question.', MAX_TOKENS)).ttftMs;
  } finally {
    await auto.stop();
  }
  const fixed = await deploy({ ...common, limits: { a: [MAX_REPLICAS, MAX_REPLICAS], b: [MAX_REPLICAS, MAX_REPLICAS] }, policy });
  try {
      // The baseline starts warm: wait for its replicas before the clock starts.
      const deadline = Date.now() + 120_000;
      while ((await fixed.observer.replicas()).length < 2 * MAX_REPLICAS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
      results.fixed = await runSchedule(fixed, 'fixed');
  } finally {
    await fixed.stop();
  }

  const header = ['phase', 'replicas (min-max, mean)', 'TTFT p50 ms', 'TTFT p99 ms', 'ITL p50 ms', 'ITL p99 ms', 'tokens/s'];
  printTable('Autoscaled (min 0, max 3 per pool)', header, phaseRows(results.auto));
  printTable('Fixed at max (3 per pool)', header, phaseRows(results.fixed));
  const tokens = (r: RunResult) => r.requests.reduce((s, q) => s + q.tokens, 0);
  const autoRs = replicaSeconds(results.auto);
  const fixedRs = replicaSeconds(results.fixed);
  const perRs = (r: RunResult, rs: number) => tokens(r) / rs;
  printTable('Resources', ['deployment', 'tokens', 'replica-seconds', 'tokens per replica-second', 'vs fixed'], [
    ['autoscaled', tokens(results.auto), fmt(autoRs), fmt(perRs(results.auto, autoRs), 2), fmt(perRs(results.auto, autoRs) / perRs(results.fixed, fixedRs), 2)],
    ['fixed at max', tokens(results.fixed), fmt(fixedRs), fmt(perRs(results.fixed, fixedRs), 2), '1.00'],
  ]);
  printTable('Reaction', ['measure', 'value'], [
    ['scale-up reaction (32-client step -> one more replica serving)', `${fmt(results.auto.reactionS, 2)} s`],
    ['cold start from zero: TTFT of a request with both pools at zero', `${fmt(results.coldMs!, 0)} ms`],
    ['warm TTFT right after', `${fmt(results.warmMs!, 0)} ms`],
  ]);
  const svgPath = join(BENCH_DIR, 'autoscale.svg');
  await writeFile(svgPath, plot(results.auto, results.fixed));
  console.log(`\nplot: ${svgPath}`);
}

await main();
