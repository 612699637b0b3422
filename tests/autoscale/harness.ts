/**
 * An autoscaled split deployment for tests and the benchmark: a real nats-server, the tiny 4e bundle,
 * the process driver's workers, the controller (in this process, so tests read its state) and
 * optionally the edge API with scale from zero on.
 */
import { buildMultimodalBundle } from '../multimodal/setup';
import { wireModel } from '@unimoe/shared/wire/subjects';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { Controller } from '@unimoe/edge/autoscale/controller';
import { ProcessDriver } from '@unimoe/edge/autoscale/drivers/process';
import { Observer } from '@unimoe/edge/autoscale/observe';
import { DEFAULT_POLICY, parseEncoderPoolFlag, parsePoolFlag, type PoolSpec, type ScalingPolicy } from '@unimoe/edge/autoscale/policy';
import { readManifest } from '@unimoe/shared/bundle/load';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { modelFixture } from '../helpers/fixtures';

/** Short windows so a test sees scale-up, scale-down and scale-to-zero within a minute. */
export const FAST_POLICY: ScalingPolicy = {
  ...DEFAULT_POLICY,
  targetBusyFraction: 0.9,
  targetTokensPerSecond: 20,
  targetQueueDepth: 0,
  scaleDownStabilizationMs: 3000,
  scaleUpCooldownMs: 1500,
  idleToZeroMs: 4000,
  maxScaleUpStep: 2,
};

export interface Deployment {
  nats: NatsServer;
  bundle: string;
  manifest: Manifest;
  stateDir: string;
  driver: ProcessDriver;
  pools: PoolSpec[];
  controller: Controller;
  observer: Observer;
  edge?: RunningServer;
  /** Stops the controller, then starts a fresh one (new observer and driver objects, same NATS and state directory); resolves to what ran in between. */
  restartController(): Promise<Record<string, number>>;
  /** Every decision line the controllers logged. */
  decisions: string[];
  /** Running replicas per pool, by the driver. */
  running(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

export interface DeployOptions {
  pools: string[];
  /** [min, max] per pool name. */
  limits: Record<string, [number, number]>;
  policy?: Partial<ScalingPolicy>;
  /** Start the edge API too (scale from zero on). */
  edge?: boolean;
  intervalMs?: number;
  /** Checkpoint to convert; default the tiny 4e fixture. */
  checkpoint?: string;
  /** A bundle to use as is instead (e.g. tinyMultimodalBundle's). */
  bundleDir?: string;
  /** `NAME=vision,audio` pools (limits from `limits` too). */
  encoderPools?: string[];
  /** Worker load window; default 2000 ms. */
  statsWindowMs?: number;
  log?: (line: string) => void;
}

export async function deploy(opts: DeployOptions): Promise<Deployment> {
  const root = await mkdtemp(join(tmpdir(), 'unimoe-autoscale-'));
  let bundle = join(root, 'bundle');
  const stateDir = join(root, 'state');
  const cleanups: (() => Promise<void>)[] = [() => rm(root, { recursive: true, force: true })];
  const stopAll = async () => {
    for (const fn of cleanups.reverse()) await fn().catch((err: unknown) => console.error(`[autoscale test] cleanup: ${(err as Error).message}`));
  };
  try {
    const manifest = opts.bundleDir
      ? await readManifest(opts.bundleDir)
      : await convertCheckpoint({ checkpointDir: opts.checkpoint ?? modelFixture('unimoe-4e'), bundleDir: bundle, name: 'tiny-4e' });
    if (opts.bundleDir) bundle = opts.bundleDir;
    const nats = await startNatsServer();
    cleanups.push(() => nats.stop());
    const model = { layers: manifest.config.layers, experts: manifest.config.experts };
    const pools = [...opts.pools.map((p) => parsePoolFlag(p, { minReplicas: 0, maxReplicas: 1 })), ...(opts.encoderPools ?? []).map((p) => parseEncoderPoolFlag(p, { minReplicas: 0, maxReplicas: 1 }))].map((spec) => {
      const [min, max] = opts.limits[spec.name] ?? [0, 1];
      return { ...spec, minReplicas: min, maxReplicas: max };
    });
    const policy = { ...FAST_POLICY, ...opts.policy };
    const makeDriver = () =>
      new ProcessDriver({ bundle, natsUrl: nats.url, stateDir, env: { UNIMOE_THREADS: '1' }, workerArgs: ['--stats-interval', '1000', '--stats-window', String(opts.statsWindowMs ?? 2000)] });
    let driver = makeDriver();
    cleanups.push(() => driver.stopAll());
    const decisions: string[] = [];
    const print = opts.log ?? ((line: string) => console.log(line));
    const log = (line: string) => {
      decisions.push(line);
      print(line);
    };
    const startController = async () => {
      const observer = await Observer.open({ natsUrl: nats.url, model: wireModel(manifest), ...model, discoveryMs: 300, routedWindowMs: 3000 });
      const controller = new Controller({ model, pools, policy, driver, observer, intervalMs: opts.intervalMs ?? 500, log });
      await controller.init();
      controller.start();
      return { observer, controller };
    };
    let c = await startController();
    cleanups.push(async () => {
      await d.controller.stop();
      await d.observer.close();
    });
    const d: Deployment = {
      nats,
      bundle,
      manifest,
      stateDir,
      driver,
      pools,
      controller: c.controller,
      observer: c.observer,
      async restartController() {
        await d.controller.stop();
        await d.observer.close();
        const between = await d.running();
        driver = makeDriver();
        d.driver = driver;
        c = await startController();
        d.controller = c.controller;
        d.observer = c.observer;
        return between;
      },
      decisions,
      async running() {
        const out: Record<string, number> = {};
        for (const r of await d.driver.list()) out[r.template.pool] = (out[r.template.pool] ?? 0) + 1;
        return out;
      },
      stop: stopAll,
    };
    if (opts.edge) {
      d.edge = await startServer({ bundle, natsUrl: nats.url, port: 0, host: '127.0.0.1', databaseUrl: `file:${join(root, 'usage.db')}`, api: { noAuth: true, maxConcurrentPerKey: 0, requestsPerMinute: 0 }, scaleFromZeroMs: 120_000 });
      cleanups.push(() => d.edge!.close());
    }
    return d;
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** Polls `cond` (async) every 250 ms until it holds; the error says what was awaited and the last value seen. */
export async function eventually<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await probe();
    if (ok(last)) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** One greedy chat completion through the edge; resolves to its text and token count. */
export async function chat(edge: RunningServer, prompt: string | unknown[], maxTokens = 8): Promise<{ text: string; tokens: number }> {
  const res = await fetch(`${edge.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: edge.manifest.name, messages: [{ role: 'user', content: prompt }], max_tokens: maxTokens, temperature: 0 }),
  });
  const body = (await res.json()) as { choices?: { message: { content: string } }[]; usage?: { completion_tokens: number }; error?: unknown };
  if (!res.ok) throw new Error(`chat completion failed (${res.status}): ${JSON.stringify(body)}`);
  return { text: body.choices![0]!.message.content, tokens: body.usage!.completion_tokens };
}

/** The multimodal tests' tiny Uni-MoE 4e with CLIP, Whisper and BEATs towers (model name tiny-mm). */
export async function tinyMultimodalBundle(dir: string): Promise<string> {
  return (await buildMultimodalBundle(dir)).bundle;
}
