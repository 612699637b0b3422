/** `response_format` -> the compiled grammar that constrains the output (or none for text). */
import { Ajv } from 'ajv';
import { GrammarError, type CompiledOutput } from '../grammar/output';
import { invalidRequest, type ApiError } from './errors';
import type { GenerationDeps } from './generation';
import type { ResponseFormat } from './request';

export async function compileResponseFormat(deps: Pick<GenerationDeps, 'grammar'>, format: ResponseFormat | null | undefined): Promise<CompiledOutput | undefined> {
  if (format == null || format.type === 'text') return undefined;
  if (!deps.grammar) throw invalidRequest(`response_format '${format.type}' is not available on this server.`, 'response_format', 'unsupported_parameter');
  if (format.type === 'json_schema' && !deps.grammar.checksSchemas) checkSchema(format.json_schema.schema);
  try {
    return await deps.grammar.compile(format.type === 'json_object' ? format : { type: 'json_schema', schema: format.json_schema.schema });
  } catch (err) {
    if (!(err instanceof GrammarError)) throw err;
    throw grammarRefused(err);
  }
}

/** The 400 for a schema the grammar engine cannot take. */
export function grammarRefused(err: GrammarError): ApiError {
  return invalidRequest(`Invalid schema for response_format: ${err.message}`, 'response_format.json_schema.schema', 'invalid_value');
}

/**
 * A schema must be valid JSON Schema (references resolvable) before it reaches the grammar engine,
 * which reports such faults by aborting its WebAssembly runtime.
 */
export function checkSchema(schema: object): void {
  try {
    new Ajv({ strict: false, validateFormats: false }).compile(schema);
  } catch (err) {
    throw invalidRequest(`Invalid schema for response_format: ${(err as Error).message}`, 'response_format.json_schema.schema', 'invalid_value');
  }
}
