/**
 * response_format on the engine tier: XGrammar runs where the engine does (it is Node-only WebAssembly
 * that a Worker cannot load). The edge asks an engine to compile the format once while it validates the
 * request, so a schema the grammar engine refuses gets the same 400 as on the embedded edge, before any
 * response starts; the request then carries the format and its engine compiles it again (cached) to apply it.
 */
import type { WireModel } from '@unimoe/shared/wire/subject-prefix';
import { engineSubject } from '@unimoe/shared/wire/engine-subjects';
import { GrammarError, type CompiledOutput, type OutputFormat, type OutputGrammar } from '../grammar/output';
import { engineGone, errorFromEngine, noFreeEngine } from './errors';
import { decodeJson, encodeJson, type GrammarReply } from './protocol';
import { TransportError, type EngineTransport } from './transport';

export class RemoteOutputGrammar implements OutputGrammar {
  /** The engine runs the API's JSON-schema check before compiling (engine-service/service.ts). */
  readonly checksSchemas = true;

  constructor(
    private readonly transport: EngineTransport,
    private readonly model: WireModel,
    /** A cold compile of a large schema on a real vocabulary takes seconds. */
    private readonly timeoutMs = 30_000,
  ) {}

  async compile(format: OutputFormat): Promise<CompiledOutput> {
    let reply: GrammarReply;
    try {
      const msg = await this.transport.request(engineSubject(this.model, 'grammar'), encodeJson(format), { timeoutMs: this.timeoutMs });
      reply = decodeJson<GrammarReply>(msg.data, 'grammar reply');
    } catch (err) {
      if (!(err instanceof TransportError)) throw err;
      throw err.kind === 'no-responders' ? noFreeEngine(this.model.name) : engineGone(`no engine compiled the response_format within ${this.timeoutMs} ms`);
    }
    if (!reply.ok) throw 'grammarError' in reply ? new GrammarError(reply.grammarError) : errorFromEngine(reply.error);
    return { format };
  }

  dispose(): void {}
}
