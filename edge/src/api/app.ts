/**
 * The edge HTTP API as a Hono app. Web-standard core (Request, Response, streams) so it runs on Node
 * (edge/src/serve.ts) and on Workers alike; everything it uses is injected.
 */
import { Hono, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import type { Store } from '../db/store';
import type { GenerationEngine } from '../engine/types';
import type { MultimodalPipeline } from '../multimodal/pipeline';
import type { ChatTokenizer } from './chat-tokenizer';
import type { OutputGrammar } from '../grammar/output';
import { handleChatCompletion } from './chat';
import { handleTextCompletion } from './text-completions';
import { dashboardRoutes, type DashboardSource } from './dashboard';
import { DEFAULT_API_CONFIG, type ApiConfig } from './config';
import { ApiError, internalError, invalidRequest, notFound, tooLarge, unauthorized } from './errors';
import { RequestGate } from './gate';
import { KeyLimiter } from './limits';
import { preview } from './request';
import { countHttpRequest, registry, setEngineStatsSource } from './metrics';
import { cachedReadiness } from './readiness';
import { isRequestId, log, withRequestIds } from '@unimoe/shared/log';

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
  /** Constrained decoding for response_format; without it json_object/json_schema are refused. */
  grammar?: OutputGrammar;
  /** Admission (engine full, shutting down) and the count of requests in flight; default: admits all. */
  gate?: RequestGate;
  /** Serves /dashboard (expert load view) when given. */
  dashboard?: DashboardSource;
}

type Env = { Variables: { keyId: number | null; limiterKey: string } };

const ROUTES = new Set(['/v1/chat/completions', '/v1/completions', '/v1/models', '/healthz', '/readyz', '/metrics', '/dashboard', '/dashboard/data']);

export function createApp(deps: ApiDeps): Hono<Env> {
  const config: ApiConfig = { ...DEFAULT_API_CONFIG, ...deps.config };
  const { manifest, store } = deps;
  // Media needs the bundle's encoder units and a pipeline to run them; other modalities are refused by name.
  const modalities = ['text', ...(deps.multimodal?.modalities ?? [])].filter((m) => manifest.modalities.includes(m));
  const gate = deps.gate ?? new RequestGate();
  const limiter = new KeyLimiter({ requestsPerMinute: config.requestsPerMinute, maxConcurrent: config.maxConcurrentPerKey });
  const created = Math.floor(Date.now() / 1000);
  const modelCard = { id: manifest.name, object: 'model', created, owned_by: 'unimoe' };
  setEngineStatsSource(() => deps.engine.stats());

  const app = new Hono<Env>();

  app.use('*', async (c, next) => {
    // The client's X-Request-Id when it is a sane token, else a new one; returned, logged, sent to the workers.
    const given = c.req.header('X-Request-Id');
    const requestId = given !== undefined && isRequestId(given) ? given : crypto.randomUUID();
    const startedAt = performance.now();
    await withRequestIds([requestId], next);
    c.res.headers.set('X-Request-Id', requestId);
    withRequestIds([requestId], () => log.info({ method: c.req.method, path: c.req.path, status: c.res.status, ms: Math.round(performance.now() - startedAt) }, 'request'));
    countHttpRequest(ROUTES.has(c.req.path) || c.req.path.startsWith('/v1/models/') ? c.req.path.replace(/^\/v1\/models\/.+$/, '/v1/models/:id') : 'other', c.res.status);
  });

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  const ready = cachedReadiness(deps.ready, config.readyCacheMs);
  const opsAuth = opsTokenCheck(config.metricsToken);
  app.get('/readyz', opsAuth, async (c) => {
    const r = await ready();
    return c.json({ status: r.ok ? 'ready' : 'not_ready', missing: r.missing }, r.ok ? 200 : 503);
  });
  app.get('/metrics', opsAuth, async (c) => c.body(await registry.metrics(), 200, { 'Content-Type': registry.contentType }));
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

  const limitBody = bodyLimit({ maxSize: config.bodyLimitBytes, onError: () => tooLarge(config.bodyLimitBytes).toResponse() });
  for (const [path, handle] of [
    ['/v1/chat/completions', handleChatCompletion],
    ['/v1/completions', handleTextCompletion],
  ] as const) {
    app.post(path, limitBody, (c) => {
      const leave = gate.enter();
      let release: () => void;
      try {
        release = limiter.acquire(c.get('limiterKey'));
      } catch (err) {
        leave();
        throw err;
      }
      const done = () => {
        release();
        leave();
      };
      return handle(c, { ...deps, config, modalities }, c.get('keyId'), () => parseJsonBody(c.req.raw), done);
    });
  }

  app.notFound((c) => notFound(`Invalid URL (${c.req.method} ${c.req.path})`).toResponse());
  app.onError((err) => {
    if (err instanceof ApiError) return err.toResponse();
    if (err instanceof HTTPException && err.status === 413) return tooLarge(config.bodyLimitBytes).toResponse();
    log.error({ err }, 'unhandled error');
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

/** Guards the operators' endpoints with a shared bearer token when one is configured. */
function opsTokenCheck(token: string | undefined): MiddlewareHandler {
  return async (_c, next) => {
    if (token === undefined) return next();
    const match = /^Bearer\s+(\S+)\s*$/i.exec(_c.req.header('Authorization') ?? '');
    if (!match || !sameSecret(match[1]!, token)) throw unauthorized('This endpoint needs the metrics token: send it as Authorization: Bearer <METRICS_TOKEN>.');
    return next();
  };
}

/** Compares without stopping at the first difference, so response timing does not reveal the token's prefix. */
function sameSecret(given: string, expected: string): boolean {
  let diff = given.length ^ expected.length;
  for (let i = 0; i < expected.length; i++) diff |= (given.charCodeAt(i) | 0) ^ expected.charCodeAt(i);
  return diff === 0;
}

/** Shows a key's beginning and end only, as OpenAI does. */
export function maskKey(key: string): string {
  return key.length <= 12 ? '*'.repeat(key.length) : `${key.slice(0, 8)}****${key.slice(-4)}`;
}
