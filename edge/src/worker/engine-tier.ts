/**
 * The engine tier as the Worker's app sees it: what the bundle is (discovery: manifest, hash, tokenizer
 * built from the file the engines serve, so the Worker holds no bundle), a GenerationEngine and an
 * OutputGrammar whose every call runs over its own NATS connection (./nats).
 */
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { loadTokenizer, type TextTokenizer } from '@unimoe/shared/tokenizer/index';
import type { WireModel } from '@unimoe/shared/wire/subject-prefix';
import type { Readiness } from '../api/app';
import { discoverEngine, fetchTokenizer } from '../engine-client/discovery';
import { RemoteEngine } from '../engine-client/remote-engine';
import { RemoteOutputGrammar } from '../engine-client/remote-grammar';
import type { EngineStats, GenerationEngine, GenerationRequest, GenerationResult } from '../engine/types';
import type { CompiledOutput, OutputFormat, OutputGrammar } from '../grammar/output';
import type { WorkerEnv } from './env';
import { withNats } from './nats';
import { keepAlive } from './request-context';

export interface DiscoveredBundle {
  manifest: Manifest;
  model: WireModel;
  tokenizer: TextTokenizer;
}

/** Asks any engine of MODEL for its bundle, then fetches, checks and loads the tokenizer it names. */
export function discoverBundle(env: WorkerEnv): Promise<DiscoveredBundle> {
  return withNats(env, async (transport) => {
    const found = await discoverEngine(transport, env.MODEL);
    const { manifest } = found;
    const model = { name: manifest.name, hash: found.hash };
    // Checked against the manifest's sha256.
    const bytes = await fetchTokenizer(transport, found);
    try {
      return { manifest, model, tokenizer: loadTokenizer(manifest.tokenizer.kind ?? 'sentencepiece', bytes) };
    } catch (err) {
      throw new Error(`the tokenizer ${manifest.tokenizer.file} served by the engines of ${manifest.name}: ${(err as Error).message}`, { cause: err });
    }
  });
}

/** Ready while an engine of the discovered bundle answers discovery. */
export async function engineTierReady(env: WorkerEnv, model: WireModel): Promise<Readiness> {
  try {
    const { hash } = await withNats(env, (transport) => discoverEngine(transport, env.MODEL));
    // Engines of another build of the model would not serve this Worker's subjects.
    return hash === model.hash ? { ok: true, missing: [] } : { ok: false, missing: [`engine for ${model.name} bundle ${model.hash}`] };
  } catch {
    return { ok: false, missing: [`engine for ${model.name}`] };
  }
}

/** RemoteEngine, one NATS connection per generation; stats count this isolate's requests. */
export class WorkerEngine implements GenerationEngine {
  readonly remote = true;
  private running = 0;
  private generatedTokens = 0;

  constructor(
    private readonly env: WorkerEnv,
    private readonly model: WireModel,
  ) {}

  async generate(req: GenerationRequest): Promise<GenerationResult> {
    this.running++;
    try {
      // Kept alive past a client disconnect: the abort must still reach the engine as a cancel.
      const result = await keepAlive(withNats(this.env, (transport) => new RemoteEngine({ transport, model: this.model }).generate(req)));
      this.generatedTokens += result.choices.reduce((sum, c) => sum + c.completionTokens, 0);
      return result;
    } finally {
      this.running--;
    }
  }

  logits(): Promise<Float32Array> {
    return Promise.reject(new Error('logits are not served by the Worker; run `unimoe logits` on the bundle'));
  }

  stats(): EngineStats {
    return { running: this.running, waiting: 0, steps: 0, generatedTokens: this.generatedTokens };
  }

  async close(): Promise<void> {}
}

/**
 * response_format checked by an engine, schema included (XGrammar cannot run in a Worker, nor Ajv, which
 * compiles validators with `new Function`), over its own connection.
 */
export class WorkerOutputGrammar implements OutputGrammar {
  readonly checksSchemas = true;

  constructor(
    private readonly env: WorkerEnv,
    private readonly model: WireModel,
  ) {}

  compile(format: OutputFormat): Promise<CompiledOutput> {
    return withNats(this.env, (transport) => new RemoteOutputGrammar(transport, this.model).compile(format));
  }

  dispose(): void {}
}
