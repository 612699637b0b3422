/**
 * The edge API on Node: opens the bundle (experts in-process, or on NATS pools with `natsUrl`), the
 * modality encoders (in-process in embedded mode; on the pools started with `--encoders` in split
 * mode unless `localEncoders`), the database and the tokenizer, builds the Hono app and serves it
 * with @hono/node-server.
 */
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { collectDefaultMetrics } from 'prom-client';
import { readManifest } from '@unimoe/shared/bundle/load';
import { unitName, type Manifest } from '@unimoe/shared/bundle/manifest';
import { wireModel } from '@unimoe/shared/wire/subjects';
import { log } from '@unimoe/shared/log';
import type { NatsSecurity } from '@unimoe/shared/runtime/nats-auth';
import { loadSentencePiece } from '@unimoe/shared/tokenizer/index';
import { createApp, type Readiness } from './api/app';
import type { ApiConfig } from './api/config';
import { instrumentExperts } from './api/expert-metrics';
import { registry } from './api/metrics';
import { createChatTokenizer } from './api/prompt';
import { resolveBundle } from './cli/resolve-bundle';
import { openStore } from './db/open';
import type { Store } from './db/store';
import { createEngine, type Engine } from './engine/engine';
import type { EncoderBackend } from './engine/encoder-backend';
import type { ExpertBackend } from './engine/expert-backend';
import { LocalEncoderBackend } from './engine/local-encoders';
import { LocalExpertBackend } from './engine/local-experts';
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
  /** Continuous batching: most sequences per step (KV cache memory grows with it) and prompt tokens per sequence per step. */
  engine?: { maxBatch?: number; prefillChunk?: number };
  /**
   * Where the modality encoders run (stays the caller's to close). Default: in this process in
   * embedded mode; in split mode on the NATS pools that host them (`unimoe worker --encoders`).
   */
  encoders?: EncoderBackend;
  /** Split mode: run the encoders in this process instead of on pools (the operator's fallback). */
  localEncoders?: boolean;
}

export interface RunningServer {
  url: string;
  port: number;
  manifest: Manifest;
  engine: Engine;
  store: Store;
  close(): Promise<void>;
}

export const DEFAULT_HOST = '127.0.0.1';

let defaultMetricsOn = false;

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  // With pools behind NATS this process runs only the dense units (and the encoders when they stay local).
  const encodersHere = !opts.encoders && (!opts.natsUrl || opts.localEncoders === true);
  const bundleDir = await resolveBundle(opts.bundle, (u) =>
    u.kind === 'expert' ? !opts.natsUrl : u.kind === 'vision' || u.kind === 'audio' ? encodersHere : true,
  );
  const manifest = await readManifest(bundleDir);
  const tokenizer = createChatTokenizer(loadSentencePiece(new Uint8Array(await readFile(join(bundleDir, manifest.tokenizer.file)))), manifest);
  const cleanup: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const fn of cleanup.reverse()) await fn().catch((err: unknown) => log.error({ err }, 'error while closing'));
  };
  try {
    const store = opts.store ?? (await openStore(opts.databaseUrl));
    if (!opts.store) cleanup.push(() => store.close());
    const { experts, ready: expertsReady } = await openExperts(bundleDir, manifest, opts.natsUrl, opts.natsSecurity);
    cleanup.push(() => experts.close());
    const engine = await createEngine({ bundleDir, experts: instrumentExperts(experts), ...opts.engine });
    cleanup.push(() => engine.close());
    const remoteEncoders = opts.natsUrl && !opts.encoders && !opts.localEncoders ? opts.natsUrl : undefined;
    const { multimodal, ready: encodersReady } = await openMultimodal(bundleDir, manifest, opts.encoders, remoteEncoders, cleanup, opts.natsSecurity, opts.media);
    const ready = async (): Promise<Readiness> => {
      const [e, m] = await Promise.all([expertsReady(), encodersReady()]);
      return { ok: e.ok && m.ok, missing: [...e.missing, ...m.missing] };
    };
    const app = createApp({ engine, tokenizer, manifest, store, ready, config: opts.api, multimodal });
    if (!defaultMetricsOn) {
      collectDefaultMetrics({ register: registry, prefix: 'unimoe_process_' });
      defaultMetricsOn = true;
    }
    const server = await listen(app.fetch, opts.port, opts.host ?? DEFAULT_HOST);
    cleanup.push(() => closeServer(server));
    const port = (server.address() as AddressInfo).port;
    const host = opts.host && opts.host !== '0.0.0.0' ? opts.host : '127.0.0.1';
    return { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`, port, manifest, engine, store, close: closeAll };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/**
 * The media pipeline when the bundle has encoder units (text-only bundles get none), with a readiness
 * probe that lists the encoder units no pool answers for when they run on NATS (`natsUrl`).
 */
async function openMultimodal(
  bundleDir: string,
  manifest: Manifest,
  injected: EncoderBackend | undefined,
  natsUrl: string | undefined,
  cleanup: (() => Promise<void>)[],
  natsSecurity?: NatsSecurity,
  media?: Partial<MediaLimits>,
): Promise<{ multimodal?: MultimodalPipeline; ready: () => Promise<Readiness> }> {
  const always = async () => ({ ok: true, missing: [] });
  const units = manifest.units.filter((u) => u.kind === 'vision' || u.kind === 'audio').map((u) => u.name);
  if (units.length === 0) return { ready: always };
  if (injected) return { multimodal: new MultimodalPipeline(manifest, injected, media), ready: always };
  if (!natsUrl) {
    const local = await LocalEncoderBackend.open(bundleDir, manifest);
    cleanup.push(() => local.close());
    return { multimodal: new MultimodalPipeline(manifest, local, media), ready: always };
  }
  const { createNatsEncoderBackend } = await import('./dispatch/nats-encoder-backend');
  const remote = await createNatsEncoderBackend({ natsUrl, manifest, natsSecurity });
  cleanup.push(() => remote.close());
  return {
    multimodal: new MultimodalPipeline(manifest, remote, media),
    ready: async () => {
      const { missing } = await remote.unitsAvailable(units);
      return { ok: missing.length === 0, missing };
    },
  };
}

async function openExperts(bundleDir: string, manifest: Manifest, natsUrl?: string, natsSecurity?: NatsSecurity): Promise<{ experts: ExpertBackend; ready: () => Promise<Readiness> }> {
  if (!natsUrl) {
    // Embedded: loading every expert up front means ready() is true once the server listens.
    const experts = await LocalExpertBackend.open(bundleDir, { eager: true }, manifest);
    return { experts, ready: async () => ({ ok: true, missing: [] }) };
  }
  const { createNatsExpertBackend } = await import('./dispatch/nats-expert-backend');
  const experts = await createNatsExpertBackend({ natsUrl, natsSecurity, model: wireModel(manifest), hidden: manifest.config.hidden });
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
