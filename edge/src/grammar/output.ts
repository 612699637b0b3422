/** What response_format compiles to, independent of the grammar engine (Node-free: the Workers edge uses it). */
import type { TokenConstraint } from '../engine/types';

/** What the API asks for: `response_format` json_object, or json_schema with its schema. */
export type OutputFormat = { type: 'json_object' } | { type: 'json_schema'; schema: object };

export interface OutputGrammar<C extends CompiledOutput = CompiledOutput> {
  /**
   * compile() also checks a JSON schema as the API does (Ajv) and throws the API's 400 for a bad one, so the
   * caller need not (the engine tier: Ajv compiles validators with `new Function`, which a Worker forbids).
   */
  readonly checksSchemas?: boolean;
  /** Compiles a format (cached by its JSON); throws GrammarError for a schema the engine cannot take. */
  compile(format: OutputFormat): Promise<C>;
  dispose(): void;
}

export interface CompiledOutput {
  format: OutputFormat;
  /**
   * A fresh matcher (one per choice); the engine disposes of it when the choice ends. Absent when the
   * grammar was only checked here and a remote engine compiles and applies it (engine tier).
   */
  matcher?(): Promise<TokenConstraint>;
}

/** A grammar compiled here, with its matchers. */
export type MatchingOutput = Required<CompiledOutput>;

export class GrammarError extends Error {
  override name = 'GrammarError';
}
