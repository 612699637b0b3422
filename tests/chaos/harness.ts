/**
 * The chaos harness shared by `pnpm test:chaos` and `pnpm bench:chaos`: a real split deployment on this
 * machine - nats-server, two expert pools of two replica processes each, the edge API in this process -
 * concurrent SSE streams against it, and the faults: kill -9 of a replica, SIGSTOP of a replica, a
 * nats-server restart, a whole pool restarting. Streams record when each content chunk arrived, so a
 * fault's cost shows as the longest gap between two chunks.
 */
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import type { NatsExpertBackendOptions } from '@unimoe/edge/dispatch/nats-expert-backend';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { spawnWorker, tinyBundle, type WorkerProcess } from '../split/cluster';

export type Fault = 'kill -9 of a replica' | 'SIGSTOP of a replica for 5 s' | 'nats-server restart' | 'whole pool restart';
export const FAULTS: Fault[] = ['kill -9 of a replica', 'SIGSTOP of a replica for 5 s', 'nats-server restart', 'whole pool restart'];

const POOLS = [
  { name: 'a', experts: '0-1' },
  { name: 'b', experts: '2-3' },
];
const REPLICAS = 2;

export interface ChaosCluster {
  edge: RunningServer;
  /** Each pool's live replica processes. */
  pools: Record<string, WorkerProcess[]>;
  /** Runs `fault` against pool a (or the server); resolves when it is over (the replica continued, the pool back...). */
  inject(fault: Fault): Promise<void>;
  /** Stops nats-server for good. */
  stopNats(): Promise<void>;
  close(): Promise<void>;
}

export async function startChaosCluster(opts: { dispatch?: Pick<NatsExpertBackendOptions, 'timeoutMs' | 'hedging'> } = {}): Promise<ChaosCluster> {
  const bundle = await tinyBundle();
  let nats: NatsServer = await startNatsServer();
  const pools: Record<string, WorkerProcess[]> = {};
  const spawnReplica = (pool: (typeof POOLS)[number]) =>
    spawnWorker([bundle.dir, '--pool', pool.name, '--experts', pool.experts, '--nats', nats.url, '--drain-timeout', '3000']);
  const stopReplica = async (w: WorkerProcess) => {
    if (w.child.exitCode === null && w.child.signalCode === null) {
      w.child.kill('SIGCONT');
      w.child.kill('SIGTERM');
    }
    await w.exited;
  };
  let edge: RunningServer | undefined;
  const close = async () => {
    await edge?.close();
    await Promise.all(Object.values(pools).flat().map(stopReplica));
    await nats.stop();
    await bundle.cleanup();
  };
  try {
    for (const pool of POOLS) pools[pool.name] = Array.from({ length: REPLICAS }, () => spawnReplica(pool));
    await Promise.all(Object.values(pools).flat().map((w) => w.ready));
    edge = await startServer({
      bundle: bundle.dir,
      natsUrl: nats.url,
      port: 0,
      host: '127.0.0.1',
      databaseUrl: `file:${bundle.dir}/usage.db`,
      api: { noAuth: true, requestsPerMinute: 0, maxConcurrentPerKey: 0 },
      engine: { maxBatch: 32 },
      dispatch: opts.dispatch,
    });
  } catch (err) {
    await close();
    throw err;
  }
  const pool = POOLS[0]!;
  const inject = async (fault: Fault) => {
    const replicas = pools[pool.name]!;
    if (fault === 'kill -9 of a replica') {
      const victim = replicas.shift()!;
      victim.child.kill('SIGKILL');
      await victim.exited;
      const fresh = spawnReplica(pool); // back to two replicas for the next fault
      replicas.push(fresh);
      await fresh.ready;
    } else if (fault === 'SIGSTOP of a replica for 5 s') {
      replicas[0]!.child.kill('SIGSTOP');
      await sleep(5000);
      replicas[0]!.child.kill('SIGCONT');
    } else if (fault === 'nats-server restart') {
      const port = nats.port;
      await nats.stop();
      await sleep(500);
      nats = await startNatsServer({ port });
    } else {
      const old = replicas.splice(0);
      await Promise.all(old.map(stopReplica));
      const fresh = Array.from({ length: REPLICAS }, () => spawnReplica(pool));
      replicas.push(...fresh);
      await Promise.all(fresh.map((w) => w.ready));
    }
  };
  return { edge: edge!, pools, inject, stopNats: () => nats.stop(), close };
}

export interface StreamOutcome {
  /** The whole text, or undefined when the stream failed. */
  text?: string;
  finishReason?: string;
  /** The HTTP status, or the error event's code, when it failed. */
  error?: string;
  /** performance.now() of each content chunk. */
  chunkTimes: number[];
}

/** `n` distinct greedy prompts, so every stream's output is its own. */
export const PROMPTS = (n: number) => Array.from({ length: n }, (_, i) => `Tell me a story about the number ${i} and a ${['cat', 'ship', 'tree', 'lamp'][i % 4]}.`);

/**
 * Starts one SSE stream per prompt (temperature 0); once every stream has produced `afterChunks`
 * content chunks, runs `fault` (if any) while they go on; resolves with every stream's outcome.
 */
export async function runStreams(url: string, model: string, prompts: string[], maxTokens: number, fault?: () => Promise<void>, afterChunks = 5): Promise<{ outcomes: StreamOutcome[]; faultAt?: number }> {
  let started = 0;
  let release!: () => void;
  const allStarted = new Promise<void>((resolve) => (release = resolve));
  const onStarted = () => {
    if (++started === prompts.length) release();
  };
  const streams = prompts.map((content) => stream(url, model, content, maxTokens, afterChunks, onStarted));
  let faultAt: number | undefined;
  const faulted = (async () => {
    if (!fault) return;
    // A stream that ends (or fails) before its first chunks also counts as started.
    await Promise.race([allStarted, Promise.allSettled(streams)]);
    faultAt = performance.now();
    await fault();
  })();
  const outcomes = await Promise.all(streams);
  await faulted;
  return { outcomes, faultAt };
}

async function stream(url: string, model: string, content: string, maxTokens: number, afterChunks: number, onStarted: () => void): Promise<StreamOutcome> {
  const chunkTimes: number[] = [];
  let startedReported = false;
  const started = () => {
    if (!startedReported) {
      startedReported = true;
      onStarted();
    }
  };
  try {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content }], max_tokens: maxTokens, temperature: 0, stream: true }),
    });
    if (!res.ok) return { error: `HTTP ${res.status}: ${await res.text()}`, chunkTimes };
    let text = '';
    let finishReason: string | undefined;
    let buffered = '';
    const decoder = new TextDecoder();
    const reader = res.body!.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const event = buffered.slice(0, end).replace(/^data: /, '');
        buffered = buffered.slice(end + 2);
        if (event === '[DONE]') continue;
        const data = JSON.parse(event) as { error?: { code: string; message: string }; choices?: { delta: { content?: string }; finish_reason: string | null }[] };
        if (data.error) return { error: `${data.error.code}: ${data.error.message}`, chunkTimes };
        const choice = data.choices?.[0];
        if (choice?.delta.content) {
          chunkTimes.push(performance.now());
          text += choice.delta.content;
          if (chunkTimes.length === afterChunks) started();
        }
        if (choice?.finish_reason) finishReason = choice.finish_reason;
      }
    }
    return { text, finishReason, chunkTimes };
  } catch (err) {
    return { error: (err as Error).message, chunkTimes };
  } finally {
    started();
  }
}

/** The longest wait between two consecutive chunks of any stream (ms). */
export function worstGapMs(outcomes: StreamOutcome[]): number {
  let worst = 0;
  for (const o of outcomes) for (let i = 1; i < o.chunkTimes.length; i++) worst = Math.max(worst, o.chunkTimes[i]! - o.chunkTimes[i - 1]!);
  return worst;
}

/** How many streams ended with exactly the fault-free run's text and finish reason. */
export function identicalTo(outcomes: StreamOutcome[], reference: StreamOutcome[]): number {
  return outcomes.filter((o, i) => o.text !== undefined && o.text === reference[i]!.text && o.finishReason === reference[i]!.finishReason).length;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
