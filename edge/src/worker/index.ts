/**
 * The edge API as a Cloudflare Worker (infra/workers/wrangler.toml): the same Hono app as the Node edge
 * (edge/src/serve.ts), with the Workers pieces injected: keys and usage in D1, generation on the engine
 * tier over NATS websockets, the tokenizer from the engines' bundle, media preprocessed here (WAV, PNG,
 * JPEG, WebP, GIF; the JPEG/WebP decoders are WebAssembly modules that wrangler bundles precompiled).
 */
import type { ExecutionContext } from 'hono';
import jpeg from '@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm';
import webp from '@jsquash/webp/codec/dec/webp_dec.wasm';
import { log } from '@unimoe/shared/log';
import { createApp } from '../api/app';
import { unavailable } from '../api/errors';
import { createChatTokenizer } from '../api/prompt';
import { openD1Store } from '../db/d1-store';
import type { Store } from '../db/store';
import { provideImageCodecModules } from '../preprocess/wasm-codecs';
import { apiConfigFromEnv, type WorkerEnv } from './env';
import { discoverBundle, engineTierReady, WorkerEngine, WorkerOutputGrammar } from './engine-tier';
import { cancelOnClientGone } from './client-stream';
import { workerMultimodal } from './multimodal';
import { keepAlive, runInRequest } from './request-context';

/** One app per isolate (its rate limits and gate live in it), built by the first request. */
let app: Promise<App> | undefined;
type App = ReturnType<typeof createApp>;

async function buildApp(env: WorkerEnv): Promise<App> {
  const config = apiConfigFromEnv(env);
  const { manifest, model, tokenizer } = await discoverBundle(env);
  provideImageCodecModules({ jpeg, webp });
  log.info({ model: manifest.name, hash: model.hash }, 'engine tier discovered');
  return createApp({
    engine: new WorkerEngine(env, model),
    tokenizer: createChatTokenizer(tokenizer, manifest),
    manifest,
    store: usageOutlivingClients(openD1Store(env.DB)),
    ready: () => engineTierReady(env, model),
    config,
    multimodal: workerMultimodal(manifest),
    grammar: new WorkerOutputGrammar(env, model),
  });
}

export default {
  async fetch(request: Request, env: WorkerEnv, ctx: ExecutionContext): Promise<Response> {
    const building = (app ??= buildApp(env));
    let ready: App;
    try {
      ready = await building;
    } catch (err) {
      // The next request tries again (an engine may have started since).
      if (app === building) app = undefined;
      log.error({ err }, 'the Worker could not start');
      return unavailable(`The API is not ready: ${(err as Error).message}`, 'engine_unavailable').toResponse();
    }
    return cancelOnClientGone(await runInRequest(ctx, () => ready.fetch(request, env, ctx)));
  },
};

/** Usage rows are written even when the client has gone (a disconnect is recorded as 499). */
function usageOutlivingClients(store: Store): Store {
  return { ...store, recordUsage: (record) => keepAlive(store.recordUsage(record)) };
}
