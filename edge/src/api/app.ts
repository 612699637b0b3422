/**
 * The edge HTTP API as a Hono app. Web-standard core (Request, Response, streams) so it runs on Node
 * (edge/src/serve.ts) and on Workers alike; everything it uses is injected.
 */
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import type { Store } from '../db/store';
import type { GenerationEngine } from '../engine/types';
import type { MultimodalPipeline } from '../multimodal/pipeline';
import type { ChatTokenizer } from './chat-tokenizer';
import { handleChatCompletion } from './chat';
import { dashboardRoutes, type DashboardSource } from './dashboard';
import { DEFAULT_API_CONFIG, type ApiConfig } from './config';
import { ApiError, internalError, invalidRequest, notFound, tooLarge, unauthorized } from './errors';
import { KeyLimiter } from './limits';
import { preview } from './request';
import { countHttpRequest, registry, setEngineStatsSource } from './metrics';

export interface Readiness {
  ok: boolean;
  /** Units no process serves yet (split mode). */
  missing: string[];
}

export interface ApiDeps {
  engine: GenerationEngine;
  tokenizer: ChatTokenizer;
  manifest: Manifest;
  store: Store;
  ready: () => Promise<Readiness>;
  config?: Partial<ApiConfig>;
  /** Preprocesses and encodes media; without it only text is accepted. */
  multimodal?: MultimodalPipeline;
  /** Serves /dashboard (expert load view) when given. */
  dashboard?: DashboardSource;
}

type Env = { Variables: { keyId: number | null; limiterKey: string } };

const ROUTES = new Set(['/v1/chat/completions', '/v1/models', '/healthz', '/readyz', '/metrics', '/dashboard', '/dashboard/data']);

export function createApp(deps: ApiDeps): Hono<Env> {
  const config: ApiConfig = { ...DEFAULT_API_CONFIG, ...deps.config };
  const { manifest, store } = deps;
  // Media needs the bundle's encoder units and a pipeline to run them; other modalities are refused by name.
  const modalities = ['text', ...(deps.multimodal?.modalities ?? [])].filter((m) => manifest.modalities.includes(m));
  const limiter = new KeyLimiter({ requestsPerMinute: config.requestsPerMinute, maxConcurrent: config.maxConcurrentPerKey });
  const created = Math.floor(Date.now() / 1000);
  const modelCard = { id: manifest.name, object: 'model', created, owned_by: 'unimoe' };
  setEngineStatsSource(() => deps.engine.stats());

  const app = new Hono<Env>();

  app.use('*', async (c, next) => {
    await next();
    countHttpRequest(ROUTES.has(c.req.path) || c.req.path.startsWith('/v1/models/') ? c.req.path.replace(/^\/v1\/models\/.+$/, '/v1/models/:id') : 'other', c.res.status);
  });

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const r = await deps.ready();
    return c.json({ status: r.ok ? 'ready' : 'not_ready', missing: r.missing }, r.ok ? 200 : 503);
  });
  app.get('/metrics', async (c) => c.body(await registry.metrics(), 200, { 'Content-Type': registry.contentType }));
  if (deps.dashboard) app.route('/dashboard', dashboardRoutes(deps.dashboard));

  app.use('/v1/*', async (c, next) => {
    if (config.noAuth) {
      c.set('keyId', null);
      c.set('limiterKey', 'anonymous');
      return next();
    }
    const match = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header('Authorization') ?? '');
    if (!match) {
      throw unauthorized("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).");
    }
    const key = await store.findActiveKey(match[1]!);
    if (!key) throw unauthorized(`Incorrect API key provided: ${maskKey(match[1]!)}. The key is unknown or has been revoked.`);
    c.set('keyId', key.id);
    c.set('limiterKey', `key:${key.id}`);
    return next();
  });

  app.get('/v1/models', (c) => c.json({ object: 'list', data: [modelCard] }));
  app.get('/v1/models/:id{.+}', (c) => {
    if (c.req.param('id') !== manifest.name) throw notFound(`The model ${preview(c.req.param('id'))} does not exist or you do not have access to it.`, 'model_not_found');
    return c.json(modelCard);
  });

  app.post(
    '/v1/chat/completions',
    bodyLimit({ maxSize: config.bodyLimitBytes, onError: () => tooLarge(config.bodyLimitBytes).toResponse() }),
    (c) => {
      const release = limiter.acquire(c.get('limiterKey'));
      return handleChatCompletion(c, { ...deps, config, modalities }, c.get('keyId'), () => parseJsonBody(c.req.raw), release);
    },
  );

  app.notFound((c) => notFound(`Invalid URL (${c.req.method} ${c.req.path})`).toResponse());
  app.onError((err) => {
    if (err instanceof ApiError) return err.toResponse();
    if (err instanceof HTTPException && err.status === 413) return tooLarge(config.bodyLimitBytes).toResponse();
    console.error('[api] unhandled error:', err);
    return internalError().toResponse();
  });
  return app;
}

async function parseJsonBody(req: Request): Promise<unknown> {
  const text = await req.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalidRequest(
      `We could not parse the JSON body of your request (${(err as Error).message}). The body must be a JSON object; send it with Content-Type: application/json.`,
      null,
      'invalid_json',
    );
  }
}

/** Shows a key's beginning and end only, as OpenAI does. */
export function maskKey(key: string): string {
  return key.length <= 12 ? '*'.repeat(key.length) : `${key.slice(0, 8)}****${key.slice(-4)}`;
}
