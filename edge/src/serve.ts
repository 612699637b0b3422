/**
 * The edge API on Node: opens the bundle (experts in-process, or on NATS pools with `natsUrl`), the
 * modality encoders (in-process in embedded mode; on the pools started with `--encoders` in split
 * mode unless `localEncoders`), the database and the tokenizer, builds the Hono app and serves it
 * with @hono/node-server. shutdown() is the graceful stop (SIGTERM): not ready, no new requests, the
 * running ones finish within a bound (then fail with 503), every usage row written, then closed.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { collectDefaultMetrics } from 'prom-client';
import { readManifest } from '@unimoe/shared/bundle/load';
import { isEncoderKind, unitName, type Manifest } from '@unimoe/shared/bundle/manifest';
import { wireModel } from '@unimoe/shared/wire/subjects';
import { log } from '@unimoe/shared/log';
import type { NatsRole, NatsSecurity } from '@unimoe/shared/runtime/nats-auth';
import { openTokenizer } from './cli/bundle-access';
import { createApp, type Readiness } from './api/app';
import { RequestGate } from './api/gate';
import type { ApiConfig } from './api/config';
import { instrumentExperts } from './api/expert-metrics';
import { registry } from './api/metrics';
import { RoutedTokens } from './api/routed-tokens';
import { createChatTokenizer } from './api/prompt';
import { resolveBundle } from './cli/resolve-bundle';
import { openStore } from './db/open';
import type { Store } from './db/store';
import { boundUsageWrites } from './db/usage-writes';
import { EngineUnavailableError } from './engine/admission';
import { createEngine, type Engine } from './engine/engine';
import type { GenerationEngine } from './engine/types';
import type { ChatTokenizer } from './api/chat-tokenizer';
import type { OutputGrammar } from './grammar/output';
import type { PoolView } from './dispatch/pool-telemetry';
import type { EncoderBackend } from './engine/encoder-backend';
import type { NatsExpertBackendOptions } from './dispatch/nats-expert-backend';
import type { ExpertBackend } from './engine/expert-backend';
import { LocalEncoderBackend } from './engine/local-encoders';
import { LocalExpertBackend } from './engine/local-experts';
import { createXGrammar } from './grammar/xgrammar';
import { MultimodalPipeline } from './multimodal/pipeline';
import type { MediaLimits } from './preprocess/limits';

export interface ServeOptions {
  /** Bundle directory or s3:// URI. */
  bundle: string;
  /** Run experts on the pools behind this NATS server; without it every unit runs in this process. */
  natsUrl?: string;
  /** NATS credentials and TLS; default: from the environment (shared/src/runtime/nats-auth.ts). */
  natsSecurity?: NatsSecurity;
  /** 0 picks a free port. */
  port: number;
  /** Default 127.0.0.1: reachable from other machines only when asked (`--host 0.0.0.0`). */
  host?: string;
  /** Default: DATABASE_URL, else a SQLite file under ./data/. */
  databaseUrl?: string;
  /** An already open store to use instead (stays the caller's to close), e.g. PGlite in tests. */
  store?: Store;
  api?: Partial<ApiConfig>;
  /** Media decoding limits (edge/src/preprocess/limits.ts); default DEFAULT_MEDIA_LIMITS. */
  media?: Partial<MediaLimits>;
  /**
   * Continuous batching: most sequences per step (KV cache memory grows with it) and prompt tokens per
   * sequence per step; admission control: most requests queued beyond the batch and the KV-cache budget.
   */
  engine?: { maxBatch?: number; prefillChunk?: number; maxWaiting?: number; kvBudgetBytes?: number; prefixCacheBytes?: number };
  /** Split mode: each expert batch's budget (re-sends and NATS reconnect waits included; default 10 s) and when to re-send. */
  dispatch?: Pick<NatsExpertBackendOptions, 'timeoutMs' | 'hedging' | 'scaleFromZeroMs'>;
  /** Graceful shutdown: how long running requests may take to finish (default 30 s). */
  drainMs?: number;
  /** Longest a response waits for its usage row to be written (default 5 s; the write itself carries on). */
  usageWriteWaitMs?: number;
  /**
   * Where the modality encoders run (stays the caller's to close). Default: in this process in
   * embedded mode; in split mode on the NATS pools that host them (`unimoe worker --encoders`).
   */
  encoders?: EncoderBackend;
  /** Split mode: run the encoders in this process instead of on pools (the operator's fallback). */
  localEncoders?: boolean;
  /** Split mode, scale from zero: hold a batch for a unit nobody serves up to this long while the autoscaler starts a replica. */
  scaleFromZeroMs?: number;
}

export interface RunningServer<E extends GenerationEngine = Engine> {
  url: string;
  port: number;
  manifest: Manifest;
  engine: E;
  store: Store;
  /** Stops at once: running requests fail. */
  close(): Promise<void>;
  /**
   * The graceful stop: /readyz answers 503, new requests get 503 with Retry-After, running ones get
   * `drainMs` to finish (then fail with 503), every usage row is written (bounded), then close().
   */
  shutdown(): Promise<void>;
}

/**
 * `serve --engine-nats`: generations run on the engine tier behind this NATS server. The bundle gives the
 * manifest and tokenizer (no unit is loaded or fetched); without one, `model` names the model and an
 * engine supplies both (discovery).
 */
export interface EngineTierServeOptions extends Omit<ServeOptions, 'bundle' | 'natsUrl' | 'encoders' | 'localEncoders' | 'engine' | 'dispatch' | 'scaleFromZeroMs'> {
  engineNatsUrl: string;
  bundle?: string;
  model?: string;
  /** How long an engine may take to accept a request (default 10 s); silence after which a running one counts as gone (default: 3 heartbeats + 1 s). */
  acceptTimeoutMs?: number;
  silenceMs?: number;
}

export const DEFAULT_HOST = '127.0.0.1';
/** After the drain bound, the requests that were stopped get this long to write their last events. */
const STOPPED_REQUESTS_GRACE_MS = 5000;

let defaultMetricsOn = false;
const require = createRequire(import.meta.url);

/** What the HTTP API serves generations with: an engine and its bundle's tokenizer, media pipeline and grammar. */
interface GenerationBackend<E extends GenerationEngine> {
  manifest: Manifest;
  tokenizer: ChatTokenizer;
  engine: E;
  /** Why a new request would be refused now (admission), or null. */
  full: () => string | null;
  multimodal?: MultimodalPipeline;
  grammar: OutputGrammar;
  ready: () => Promise<Readiness>;
  routed: RoutedTokens;
  pools?: PoolView;
}

/** Embedded (every unit here) or split (experts, and encoders unless local, on the NATS pools). */
export function startServer(opts: ServeOptions): Promise<RunningServer> {
  return serveApi(opts, (cleanup) => openLocalEngine(opts, cleanup));
}

/** The API in front of the engine tier (`unimoe engine` processes): see ./serve-engine-tier. */
export async function startEngineTierServer(opts: EngineTierServeOptions): Promise<RunningServer<GenerationEngine>> {
  const { openEngineTier } = await import('./serve-engine-tier');
  return serveApi(opts, (cleanup) => openEngineTier(opts, cleanup));
}

async function openLocalEngine(opts: ServeOptions, cleanup: (() => Promise<void>)[]): Promise<GenerationBackend<Engine>> {
  // With pools behind NATS this process runs only the dense units (and the encoders when they stay local).
  const encodersHere = !opts.encoders && (!opts.natsUrl || opts.localEncoders === true);
  const bundleDir = await resolveBundle(opts.bundle, (u) =>
    u.kind === 'expert' ? !opts.natsUrl : isEncoderKind(u.kind) ? encodersHere : true,
  );
  const manifest = await readManifest(bundleDir);
  const textTokenizer = await openTokenizer(bundleDir, manifest);
  const tokenizer = createChatTokenizer(textTokenizer, manifest);
  const { experts, ready: expertsReady } = await openExperts(bundleDir, manifest, opts.natsUrl, opts.natsSecurity, { ...opts.dispatch, scaleFromZeroMs: opts.scaleFromZeroMs });
  cleanup.push(() => experts.close());
  const routed = new RoutedTokens(manifest.config.layers, manifest.config.experts);
  const engine = await createEngine({ bundleDir, experts: instrumentExperts(experts, routed), ...opts.engine });
  cleanup.push(() => engine.close());
  const remoteEncoders = opts.natsUrl && !opts.encoders && !opts.localEncoders ? opts.natsUrl : undefined;
  const { multimodal, ready: encodersReady } = await openMultimodal(bundleDir, manifest, opts.encoders, remoteEncoders, cleanup, opts.natsSecurity, opts.scaleFromZeroMs, opts.media);
  const ready = async (): Promise<Readiness> => {
    const [e, m] = await Promise.all([expertsReady(), encodersReady()]);
    return { ok: e.ok && m.ok, missing: [...e.missing, ...m.missing] };
  };
  // Structured output: the grammar covers the ids the engine may sample; the model's EOS ends it.
  const vocab = Math.min(manifest.config.vocab, manifest.tokenizer.vocabSize ?? manifest.config.vocab);
  const grammar = await createXGrammar(textTokenizer, vocab, [manifest.tokenizer.eos]);
  cleanup.push(async () => grammar.dispose());
  const pools = opts.natsUrl
    ? await (await import('./dispatch/pool-telemetry')).startPoolTelemetry({ natsUrl: opts.natsUrl, natsSecurity: opts.natsSecurity, model: wireModel(manifest), routed })
    : undefined;
  if (pools) cleanup.push(() => pools.close());
  return { manifest, tokenizer, engine, full: () => engine.full(), ...(multimodal ? { multimodal } : {}), grammar, ready, routed, ...(pools ? { pools } : {}) };
}

/** The store, the app on `backend`, the listener, and the graceful shutdown, whatever runs the generations. */
async function serveApi<E extends GenerationEngine>(
  opts: Omit<ServeOptions, 'bundle'>,
  open: (cleanup: (() => Promise<void>)[]) => Promise<GenerationBackend<E>>,
): Promise<RunningServer<E>> {
  const cleanup: (() => Promise<void>)[] = [];
  let closing: Promise<void> | undefined;
  const closeAll = () =>
    (closing ??= (async () => {
      for (const fn of cleanup.reverse()) await fn().catch((err: unknown) => log.error({ err }, 'error while closing'));
    })());
  try {
    const rawStore = opts.store ?? (await openStore(opts.databaseUrl));
    if (!opts.store) cleanup.push(() => rawStore.close());
    const store = boundUsageWrites(rawStore, opts.usageWriteWaitMs ?? 5000);
    const { manifest, tokenizer, engine, full, multimodal, grammar, ready: backendReady, routed, pools } = await open(cleanup);
    const gate = new RequestGate(full);
    const ready = async (): Promise<Readiness> => (gate.isDraining ? { ok: false, missing: [] } : backendReady());
    const dashboard = { model: manifest.name, routed, pools, echarts: () => readFile(require.resolve('echarts/dist/echarts.min.js'), 'utf8') };
    const app = createApp({ engine, tokenizer, manifest, store, ready, config: opts.api, multimodal, grammar, gate, dashboard });
    if (!defaultMetricsOn) {
      collectDefaultMetrics({ register: registry, prefix: 'unimoe_process_' });
      defaultMetricsOn = true;
    }
    const server = await listen(app.fetch, opts.port, opts.host ?? DEFAULT_HOST);
    cleanup.push(() => closeServer(server));
    const port = (server.address() as AddressInfo).port;
    const host = opts.host && opts.host !== '0.0.0.0' ? opts.host : '127.0.0.1';
    let stopping: Promise<void> | undefined;
    const shutdown = () =>
      (stopping ??= (async () => {
        // Still listening, so that /readyz can say "not ready" and new requests get a 503 (with
        // Connection: close) while the running ones finish; the listener closes with closeAll().
        gate.drain();
        const drainMs = opts.drainMs ?? 30_000;
        if (!(await within(gate.idle(), drainMs))) {
          log.warn(`${gate.active} requests still running after ${drainMs} ms: stopping them`);
          await engine.close(new EngineUnavailableError('The server is shutting down; the request was stopped before it finished. Please retry.', 1));
          await within(gate.idle(), STOPPED_REQUESTS_GRACE_MS);
        }
        const unwritten = await store.flush(opts.usageWriteWaitMs ?? 5000);
        if (unwritten > 0) log.warn(`${unwritten} usage rows were still being written at exit`);
        await closeAll();
      })());
    return { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`, port, manifest, engine, store, close: closeAll, shutdown };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/**
 * The media pipeline when the bundle has encoder units (text-only bundles get none), with a readiness
 * probe that lists the encoder units no pool answers for when they run on NATS (`natsUrl`).
 */
export async function openMultimodal(
  bundleDir: string,
  manifest: Manifest,
  injected: EncoderBackend | undefined,
  natsUrl: string | undefined,
  cleanup: (() => Promise<void>)[],
  natsSecurity?: NatsSecurity,
  scaleFromZeroMs?: number,
  media?: Partial<MediaLimits>,
  role?: NatsRole,
): Promise<{ multimodal?: MultimodalPipeline; ready: () => Promise<Readiness> }> {
  const always = async () => ({ ok: true, missing: [] });
  const units = manifest.units.filter((u) => isEncoderKind(u.kind)).map((u) => u.name);
  if (units.length === 0) return { ready: always };
  if (injected) return { multimodal: new MultimodalPipeline(manifest, injected, media), ready: always };
  if (!natsUrl) {
    const local = await LocalEncoderBackend.open(bundleDir, manifest);
    cleanup.push(() => local.close());
    return { multimodal: new MultimodalPipeline(manifest, local, media), ready: always };
  }
  const { createNatsEncoderBackend } = await import('./dispatch/nats-encoder-backend');
  const remote = await createNatsEncoderBackend({ natsUrl, manifest, natsSecurity, scaleFromZeroMs, ...(role ? { role } : {}) });
  cleanup.push(() => remote.close());
  return {
    multimodal: new MultimodalPipeline(manifest, remote, media),
    ready: async () => {
      const { missing } = await remote.unitsAvailable(units);
      return { ok: missing.length === 0, missing };
    },
  };
}

export async function openExperts(
  bundleDir: string,
  manifest: Manifest,
  natsUrl?: string,
  natsSecurity?: NatsSecurity,
  dispatch?: ServeOptions['dispatch'],
  role?: NatsRole,
): Promise<{ experts: ExpertBackend; ready: () => Promise<Readiness> }> {
  if (!natsUrl) {
    // Embedded: loading every expert up front means ready() is true once the server listens.
    const experts = await LocalExpertBackend.open(bundleDir, { eager: true }, manifest);
    return { experts, ready: async () => ({ ok: true, missing: [] }) };
  }
  const { createNatsExpertBackend } = await import('./dispatch/nats-expert-backend');
  const experts = await createNatsExpertBackend({ natsUrl, natsSecurity, model: wireModel(manifest), hidden: manifest.config.hidden, ...dispatch, ...(role ? { role } : {}) });
  const units: string[] = [];
  for (let l = 0; l < manifest.config.layers; l++) for (let e = 0; e < manifest.config.experts; e++) units.push(unitName.expert(l, e));
  return {
    experts,
    ready: async () => {
      const { missing } = await experts.unitsAvailable(units);
      return { ok: missing.length === 0, missing };
    },
  };
}

function listen(fetch: (req: Request) => Response | Promise<Response>, port: number, hostname: string): Promise<ServerType> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, port, hostname }, () => resolve(server));
    // Idle keep-alive sockets outlive the clients' own idle timeouts (undici: 4 s, proxies: up to 60 s), so
    // the client, not the server, closes them: a server closing first races the client's next request
    // on that socket (ECONNRESET).
    if ('keepAliveTimeout' in server) {
      server.keepAliveTimeout = 65_000;
      server.headersTimeout = 66_000;
    }
    server.once('error', reject);
  });
}

function closeServer(server: ServerType): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    // Open SSE streams and keep-alive sockets would hold close() forever.
    if ('closeAllConnections' in server) server.closeAllConnections();
  });
}

/** Whether `p` settled within `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  const settled = await Promise.race([p.then(() => true), timedOut]);
  clearTimeout(timer);
  return settled;
}
