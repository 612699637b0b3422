/**
 * One accepted request on an engine: fetches its feature parts, encodes its media with the engine's
 * encoders, compiles its response_format, runs the generation and publishes its numbered events
 * (tokens as they are sampled, heartbeats while it runs, then done or the OpenAI error).
 */
import { log } from '@unimoe/shared/log';
import { logged } from '../api/generation';
import { grammarRefused } from '../api/response-format';
import type { EngineTransport } from '../engine-client/transport';
import { errorBody } from '../engine-client/errors';
import { encodeJson, featureArrays, type EngineEventBody, type GenerateRequest } from '../engine-client/protocol';
import type { Engine } from '../engine/engine';
import type { PromptEmbedding, TokenConstraint } from '../engine/types';
import { GrammarError, type MatchingOutput, type OutputGrammar } from '../grammar/output';
import type { MultimodalPipeline, PreparedMedia } from '../multimodal/pipeline';

export interface RunnerDeps {
  t: EngineTransport;
  engine: Engine;
  grammar: OutputGrammar<MatchingOutput>;
  multimodal?: MultimodalPipeline;
  heartbeatMs: number;
  /** How long a feature part may take to arrive. */
  fetchTimeoutMs: number;
}

/** What cancel messages reach while the request runs. */
export interface RunningRequest {
  abort: AbortController;
  /** Choices the edge ended (stop strings): their next token stops them. */
  stopped: Set<number>;
}

export async function runRequest(deps: RunnerDeps, req: GenerateRequest, inline: Uint8Array, running: RunningRequest): Promise<void> {
  let seq = 0;
  const send = (ev: EngineEventBody) => {
    try {
      deps.t.publish(req.events, encodeJson({ ...ev, seq: seq++ }));
    } catch (err) {
      // The connection is closing: the client notices the silence and answers 503.
      log.warn({ err, request: req.id }, 'could not publish an engine event');
    }
  };
  const heartbeat = setInterval(() => send({ type: 'heartbeat' }), deps.heartbeatMs);
  try {
    const embeddings = req.media ? await encode(deps, req, req.features ? await fetchFeatures(deps, req.features) : inline) : undefined;
    const constraints = req.responseFormat ? await matchers(deps.grammar, req) : undefined;
    const result = await deps.engine.generate({
      promptIds: req.promptIds,
      params: req.params,
      n: req.n,
      ...(embeddings ? { embeddings } : {}),
      ...(constraints ? { constraints } : {}),
      ...(req.promptLogprobs !== undefined ? { promptLogprobs: req.promptLogprobs } : {}),
      signal: running.abort.signal,
      onToken(id, choice, logprob) {
        if (running.stopped.has(choice)) return 'stop';
        send({ type: 'token', choice, id, ...(logprob ? { logprob } : {}) });
        return undefined;
      },
      onPromptLogprobs: (logprobs) => {
        // With 20 alternatives each, a long prompt's log probabilities pass max_payload: send them in pieces.
        const pieces = Math.ceil(JSON.stringify(logprobs).length / (deps.t.maxPayload() / 2));
        const per = Math.max(1, Math.ceil(logprobs.length / pieces));
        for (let offset = 0; offset < logprobs.length; offset += per) send({ type: 'prompt_logprobs', offset, total: logprobs.length, logprobs: logprobs.slice(offset, offset + per) });
      },
    });
    send({ type: 'done', promptTokens: result.promptTokens, choices: result.choices.map((c) => ({ finishReason: c.finishReason, completionTokens: c.completionTokens })) });
  } catch (err) {
    send({ type: 'error', error: errorBody(err instanceof GrammarError ? grammarRefused(err) : logged(err)) });
  } finally {
    clearInterval(heartbeat);
  }
}

/** Parts 0..K-1 from the client, all asked at once. */
async function fetchFeatures(deps: RunnerDeps, f: NonNullable<GenerateRequest['features']>): Promise<Uint8Array> {
  if (!Number.isSafeInteger(f.bytes) || f.bytes < 0 || !Number.isInteger(f.stride) || f.stride < 8) throw new Error(`features: ${f.bytes} bytes in parts of ${f.stride} is not a valid transfer`);
  const count = Math.max(1, Math.ceil(f.bytes / f.stride));
  const parts = await Promise.all(
    Array.from({ length: count }, (_, part) => deps.t.request(f.fetch, encodeJson({ part }), { timeoutMs: deps.fetchTimeoutMs }).then((m) => m.data)),
  );
  const out = new Uint8Array(f.bytes);
  parts.forEach((p, i) => {
    const want = Math.min(f.stride, f.bytes - i * f.stride);
    if (p.length !== want) throw new Error(`features: part ${i} has ${p.length} bytes, expected ${want}`);
    out.set(p, i * f.stride);
  });
  return out;
}

async function encode(deps: RunnerDeps, req: GenerateRequest, bytes: Uint8Array): Promise<PromptEmbedding[]> {
  const media = req.media!;
  if (!deps.multimodal) throw new Error('this engine has no encoders (a text-only bundle), but the request carries media');
  if (!Array.isArray(media.items) || !Array.isArray(media.runs) || media.items.length !== media.runs.length) throw new Error('media: one run per item is needed');
  const counts = media.items.map((i) => {
    if (!Array.isArray(i.dims) || !i.dims.every((d) => Number.isInteger(d) && d >= 1)) throw new Error(`media: dims ${JSON.stringify(i.dims)} are not positive integers`);
    return i.dims.reduce((a, b) => a * b, 1);
  });
  const data = featureArrays(bytes, counts);
  const items: PreparedMedia[] = media.items.map((i, k) => ({ modality: i.modality, dims: i.dims, tokens: i.tokens, data: data[k]! }));
  return deps.multimodal.runs(media.runs, items);
}

async function matchers(grammar: OutputGrammar<MatchingOutput>, req: GenerateRequest): Promise<TokenConstraint[]> {
  const compiled = await grammar.compile(req.responseFormat!);
  return Promise.all(Array.from({ length: req.n }, () => compiled.matcher()));
}

/** The request's metadata, checked far enough to accept it (the engine checks the rest). */
export function parseRequest(meta: unknown): GenerateRequest {
  const r = meta as GenerateRequest;
  if (typeof r !== 'object' || r === null) throw new Error('the request is not a JSON object');
  if (typeof r.id !== 'string' || !/^[A-Za-z0-9_-]{1,100}$/.test(r.id)) throw new Error('id must be a short token');
  if (typeof r.events !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(r.events)) throw new Error('events must be a NATS subject');
  if (!Array.isArray(r.promptIds) || typeof r.params !== 'object' || r.params === null) throw new Error('promptIds and params are needed');
  if (!Number.isInteger(r.n) || r.n < 1) throw new Error(`n must be an integer >= 1, got ${r.n}`);
  if (r.features && (typeof r.features.fetch !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(r.features.fetch))) throw new Error('features.fetch must be a NATS subject');
  return r;
}
