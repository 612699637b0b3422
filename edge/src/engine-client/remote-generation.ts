/**
 * One generation on the engine tier, from the client side: offers the request to the queue group until
 * an engine accepts it (declines are retried), serves its feature parts, turns the engine's numbered
 * events into GenerationRequest callbacks and a GenerationResult, stops a choice on the engine when the
 * edge ends it (stop string), cancels on abort, and fails with a 503 when the engine goes silent.
 */
import type { WireModel } from '@unimoe/shared/wire/subject-prefix';
import { engineReplicaSubject, engineSubject } from '@unimoe/shared/wire/engine-subjects';
import { HEADER_ALLOWANCE_BYTES } from '@unimoe/shared/wire/split';
import type { ApiError } from '../api/errors';
import { invalidRequest } from '../api/errors';
import type { ChoiceResult, GenerationRequest, GenerationResult, TokenLogprob } from '../engine/types';
import { engineGone, errorFromEngine, noFreeEngine } from './errors';
import {
  decodeJson,
  encodeFrame,
  encodeJson,
  ENGINE_HEADERS,
  ENGINE_PROTOCOL_VERSION,
  featureBytes,
  type CancelMessage,
  type EngineEvent,
  type FetchRequest,
  type GenerateReply,
  type GenerateRequest,
} from './protocol';
import { TransportError, type EngineTransport, type Subscription, type TransportMsg } from './transport';

export interface RemoteGenerationOptions {
  acceptTimeoutMs: number;
  maxAttempts: number;
  /** Silence after which the engine counts as gone; default 3 heartbeats + 1 s. */
  silenceMs?: number;
}

interface ChoiceState {
  ids: number[];
  logprobs: TokenLogprob[];
  /** Ended here by the caller's onToken ('stop'); later tokens of it are ignored. */
  stopped: boolean;
}

export class RemoteGeneration {
  readonly result: Promise<GenerationResult>;
  private resolve!: (r: GenerationResult) => void;
  private reject!: (err: Error) => void;
  private readonly id = crypto.randomUUID();
  private readonly choices: ChoiceState[];
  private readonly subs: Subscription[] = [];
  private engine?: string;
  private nextSeq = 0;
  private lastHeard = 0;
  private settled = false;
  private watchdog?: ReturnType<typeof setInterval>;
  private promptLogprobs?: (TokenLogprob | null)[];
  private features: Uint8Array = new Uint8Array(0);
  /** Bytes per feature part when the engine fetches them. */
  private stride = 0;
  private readonly onAbort = () => this.abort();

  constructor(
    private readonly t: EngineTransport,
    private readonly model: WireModel,
    private readonly req: GenerationRequest,
    private readonly opts: RemoteGenerationOptions,
    /** Called once when it ends, however; `tokens` as received. */
    private readonly ended: (tokens: number) => void,
  ) {
    this.choices = Array.from({ length: req.n ?? 1 }, () => ({ ids: [], logprobs: [], stopped: false }));
    this.result = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  async start(): Promise<void> {
    const { req } = this;
    if (req.signal?.aborted) return this.abort();
    req.signal?.addEventListener('abort', this.onAbort, { once: true });
    const base = this.t.inbox();
    const meta: GenerateRequest = {
      id: this.id,
      events: `${base}.events`,
      promptIds: req.promptIds,
      params: req.params,
      n: req.n ?? 1,
      ...(req.requestIds?.length ? { requestIds: req.requestIds } : {}),
      ...(req.promptLogprobs !== undefined ? { promptLogprobs: req.promptLogprobs } : {}),
      ...(req.responseFormat ? { responseFormat: req.responseFormat } : {}),
    };
    if (req.media && req.media.items.length > 0) {
      meta.media = { runs: req.media.runs, items: req.media.items.map(({ modality, dims, tokens }) => ({ modality, dims, tokens })) };
      this.features = featureBytes(req.media.items);
    }
    const limit = this.t.maxPayload() - HEADER_ALLOWANCE_BYTES;
    let body = encodeFrame(meta, this.features);
    if (body.length > limit) {
      // Too big for one message: the engine fetches the features in parts (as encoder workers fetch theirs).
      this.stride = Math.floor(limit / 8) * 8;
      meta.features = { bytes: this.features.length, stride: this.stride, fetch: `${base}.fetch` };
      body = encodeFrame(meta);
      if (body.length > limit) throw invalidRequest(`The prompt is too large to send to the engine tier (${body.length} bytes of token ids and parameters; the NATS server takes ${limit}).`);
      this.subs.push(this.t.subscribe(meta.features.fetch, (m) => this.onFetch(m)));
    }
    this.subs.push(this.t.subscribe(meta.events, (m) => this.onEvent(m)));
    try {
      await this.t.flush(); // the subscriptions are in place before any engine can publish to them
      const accepted = await this.offer(body);
      if (!accepted) return;
      this.engine = accepted.engine;
      if (this.settled) return this.sendCancel(); // aborted while it was being offered
      this.req.onAccepted?.();
      this.lastHeard = Date.now();
      const silence = this.opts.silenceMs ?? 3 * accepted.heartbeatMs + 1000;
      this.watchdog = setInterval(() => {
        if (Date.now() - this.lastHeard > silence) this.fail(engineGone(`engine ${this.engine} stopped answering (no message for ${silence} ms) and the generation was stopped`), true);
      }, Math.max(50, Math.floor(silence / 4)));
    } catch (err) {
      this.fail(err as Error, false);
    }
  }

  /** Offers the request until an engine accepts it; null when it was aborted meanwhile. */
  private async offer(body: Uint8Array): Promise<Extract<GenerateReply, { type: 'accepted' }> | null> {
    const subject = engineSubject(this.model, 'generate');
    const headers = { [ENGINE_HEADERS.version]: ENGINE_PROTOCOL_VERSION };
    for (let attempt = 1; ; attempt++) {
      let msg: TransportMsg;
      try {
        msg = await this.t.request(subject, body, { timeoutMs: this.opts.acceptTimeoutMs, headers });
      } catch (err) {
        if (!(err instanceof TransportError)) throw err;
        if (err.kind === 'no-responders') throw noFreeEngine(this.model.name);
        throw engineGone(`no engine answered within ${this.opts.acceptTimeoutMs} ms`);
      }
      const reply = decodeJson<GenerateReply>(msg.data, 'engine reply');
      if (reply.type === 'accepted') return reply;
      if (reply.type === 'error') throw errorFromEngine(reply.error);
      if (attempt >= this.opts.maxAttempts) throw noFreeEngine(this.model.name);
      // Declined (full or stopping): a full engine leaves the queue group, so the next offer goes elsewhere.
      await new Promise((r) => setTimeout(r, Math.min(200, 5 * 2 ** attempt)));
      if (this.settled) return null;
    }
  }

  private onFetch(m: TransportMsg): void {
    if (this.settled || !m.reply) return;
    const { part } = decodeJson<FetchRequest>(m.data, 'feature fetch');
    const { stride } = this;
    if (!Number.isInteger(part) || part < 0 || part * stride >= this.features.length) return;
    this.t.publish(m.reply, this.features.subarray(part * stride, Math.min(this.features.length, (part + 1) * stride)));
  }

  private onEvent(m: TransportMsg): void {
    if (this.settled) return;
    let ev: EngineEvent;
    try {
      ev = decodeJson<EngineEvent>(m.data, 'engine event');
    } catch (err) {
      return this.fail(engineGone((err as Error).message), true);
    }
    if (ev.seq !== this.nextSeq) return this.fail(engineGone(`event ${this.nextSeq} from engine ${this.engine} was lost (got ${ev.seq})`), true);
    this.nextSeq++;
    this.lastHeard = Date.now();
    switch (ev.type) {
      case 'token': {
        const c = this.choices[ev.choice];
        if (!c || c.stopped) return;
        c.ids.push(ev.id);
        if (ev.logprob) c.logprobs.push(ev.logprob);
        if (this.req.onToken?.(ev.id, ev.choice, ev.logprob) === 'stop') {
          c.stopped = true;
          this.sendCancel(ev.choice);
        }
        return;
      }
      case 'prompt_logprobs': {
        const lps = (this.promptLogprobs ??= []);
        if (ev.offset !== lps.length) return this.fail(engineGone(`prompt log probabilities from ${ev.offset} where ${lps.length} were expected`), true);
        lps.push(...ev.logprobs);
        if (lps.length >= ev.total) this.req.onPromptLogprobs?.(lps);
        return;
      }
      case 'heartbeat':
        return;
      case 'error':
        return this.fail(errorFromEngine(ev.error), false);
      case 'done': {
        if (ev.choices.length !== this.choices.length) return this.fail(engineGone(`the engine reported ${ev.choices.length} choices for ${this.choices.length}`), false);
        const choices = this.choices.map((c, i): ChoiceResult => {
          const e = ev.choices[i]!;
          return this.choiceResult(c, c.stopped ? 'stop' : e.finishReason, c.stopped ? c.ids.length : e.completionTokens);
        });
        return this.settle(() => this.resolve(this.resultOf(choices, ev.promptTokens)));
      }
    }
  }

  /** The caller went away: the engine drops the sequence, and the result says 'abort' at once. */
  private abort(): void {
    if (this.settled) return;
    this.sendCancel();
    const choices = this.choices.map((c) => this.choiceResult(c, 'abort', c.ids.length));
    this.settle(() => this.resolve(this.resultOf(choices, this.req.promptIds.length)));
  }

  fail(err: Error | ApiError, cancel: boolean): void {
    if (this.settled) return;
    if (cancel) this.sendCancel();
    this.settle(() => this.reject(err));
  }

  private choiceResult(c: ChoiceState, finishReason: ChoiceResult['finishReason'], completionTokens: number): ChoiceResult {
    return { ids: c.ids, finishReason, completionTokens, ...(this.req.params.logprobs !== undefined ? { logprobs: c.logprobs } : {}) };
  }

  private resultOf(choices: ChoiceResult[], promptTokens: number): GenerationResult {
    return { ...choices[0]!, promptTokens, choices, ...(this.promptLogprobs ? { promptLogprobs: this.promptLogprobs } : {}) };
  }

  private settle(finish: () => void): void {
    this.settled = true;
    clearInterval(this.watchdog);
    this.req.signal?.removeEventListener('abort', this.onAbort);
    for (const s of this.subs) s.unsubscribe();
    this.ended(this.choices.reduce((s, c) => s + c.ids.length, 0));
    finish();
  }

  private sendCancel(choice?: number): void {
    if (!this.engine) return;
    const msg: CancelMessage = { id: this.id, ...(choice !== undefined ? { choice } : {}) };
    this.t.publish(engineReplicaSubject(this.model, this.engine, 'cancel'), encodeJson(msg));
  }
}
