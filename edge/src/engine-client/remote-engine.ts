/**
 * `GenerationEngine` on the engine tier (`unimoe engine` processes behind NATS): what the Node edge with
 * `serve --engine-nats` and the Workers edge hand their prepared requests to. Runtime-agnostic: it speaks
 * through an EngineTransport (./node-nats-transport on Node, ./nats-core-transport in a Worker) and
 * imports nothing from Node.
 */
import type { WireModel } from '@unimoe/shared/wire/subject-prefix';
import type { EngineStats, GenerationEngine, GenerationRequest, GenerationResult } from '../engine/types';
import { engineGone } from './errors';
import { RemoteGeneration } from './remote-generation';
import type { EngineTransport } from './transport';

export interface RemoteEngineOptions {
  transport: EngineTransport;
  /** The bundle served (from its manifest, or from discovery: ./discovery). */
  model: WireModel;
  /** How long an engine may take to accept or decline a request (default 10 s). */
  acceptTimeoutMs?: number;
  /** Offers declined (engines at capacity) before the request fails with 503 (default 20). */
  maxAttempts?: number;
  /** Silence on a running request after which its engine counts as gone (default: 3 of its heartbeats + 1 s). */
  silenceMs?: number;
}

export class RemoteEngine implements GenerationEngine {
  readonly remote = true;
  private readonly live = new Set<RemoteGeneration>();
  private generatedTokens = 0;
  private closed = false;

  constructor(private readonly opts: RemoteEngineOptions) {}

  generate(req: GenerationRequest): Promise<GenerationResult> {
    if (req.embeddings || req.constraints) {
      return Promise.reject(new Error('the engine tier takes media features and responseFormat; embeddings and constraints cannot cross the wire'));
    }
    if (this.closed) return Promise.reject(engineGone('this edge is closing'));
    const run = new RemoteGeneration(
      this.opts.transport,
      this.opts.model,
      req,
      { acceptTimeoutMs: this.opts.acceptTimeoutMs ?? 10_000, maxAttempts: this.opts.maxAttempts ?? 20, ...(this.opts.silenceMs ? { silenceMs: this.opts.silenceMs } : {}) },
      (tokens) => {
        this.live.delete(run);
        this.generatedTokens += tokens;
      },
    );
    this.live.add(run);
    run.start().catch((err: unknown) => run.fail(err as Error, true));
    return run.result;
  }

  logits(): Promise<Float32Array> {
    return Promise.reject(new Error('logits are not served over the engine tier; run `unimoe logits` on the bundle'));
  }

  /** This edge's view: requests it has on the engine tier now, tokens received so far. */
  stats(): EngineStats {
    return { running: this.live.size, waiting: 0, steps: 0, generatedTokens: this.generatedTokens };
  }

  /** Requests still running fail with `reason` (default: a 503); their engines are told to stop them. */
  async close(reason?: Error): Promise<void> {
    this.closed = true;
    for (const run of [...this.live]) run.fail(reason ?? engineGone('this edge is closing'), true);
  }
}
