/**
 * Structured output by constrained decoding with XGrammar (`@mlc-ai/web-xgrammar`: the WebAssembly build
 * of the grammar engine vLLM and SGLang use by default). A JSON schema (or "any JSON object") compiles to
 * a grammar over the bundle's vocabulary; each choice gets a matcher that gives the allowed-token
 * bitmask before every sampling step and advances on every sampled token, so the output always
 * parses and validates unless max_tokens cuts it short.
 *
 * Node only: the package ships an Emscripten UMD bundle under `"type": "module"`, which neither
 * `import` nor `require` can load as published, so it is compiled here as the CommonJS module it is,
 * by Node's own CommonJS loader (which also serves the bundle's `import('module')`).
 */
import { readFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type { TextTokenizer } from '@unimoe/shared/tokenizer/index';
import type { TokenConstraint } from '../engine/types';
import { GrammarError, type MatchingOutput, type OutputFormat, type OutputGrammar } from './output';

type XGrammar = typeof import('@mlc-ai/web-xgrammar');
type CompiledGrammar = import('@mlc-ai/web-xgrammar').CompiledGrammar;

let loaded: XGrammar | undefined;

interface CommonJsModule {
  filename: string;
  paths: string[];
  exports: unknown;
  _compile(source: string, filename: string): void;
}

function loadXGrammar(): XGrammar {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const file = require.resolve('@mlc-ai/web-xgrammar');
  const cjs = new (Module as unknown as new (id: string) => CommonJsModule)(file);
  cjs.filename = file;
  cjs.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(dirname(file));
  cjs._compile(readFileSync(file, 'utf8'), file);
  loaded = cjs.exports as XGrammar;
  return loaded;
}

export { GrammarError, type CompiledOutput, type OutputFormat, type OutputGrammar } from './output';

/** Compact JSON (no optional whitespace): the shortest output, and no room for a model to spin in whitespace. */
const SEPARATORS: [string, string] = [',', ':'];
const NO_INDENT = -1;
/** A string character as XGrammar prints length-bounded string rules, and as JSON allows it. */
const LENGTH_BOUNDED_STRING_CHAR = '[^\\"\\\\\\r\\n]';
const JSON_STRING_CHAR = '[^\\0-\\x1f\\"\\\\\\r\\n]';
/** Distinct schemas kept compiled; compiling takes milliseconds to seconds on a real vocabulary. */
const CACHE_SIZE = 32;

/**
 * `vocabSize`: the ids the engine may sample (the mask's length); `stopIds`: what ends a finished
 * output (the model's EOS).
 */
export async function createXGrammar(tokenizer: TextTokenizer, vocabSize: number, stopIds: number[]): Promise<OutputGrammar<MatchingOutput>> {
  const xg = loadXGrammar();
  const { tokens, type } = tokenizer.grammarVocabulary();
  const info = await xg.TokenizerInfo.createTokenizerInfo(tokens.slice(0, vocabSize), type, false, vocabSize, stopIds);
  const compiler = await xg.GrammarCompiler.createGrammarCompiler(info);
  const cache = new Map<string, Promise<CompiledGrammar>>();

  const compileGrammar = (format: OutputFormat): Promise<CompiledGrammar> => {
    // "Any JSON object" is the schema {"type": "object"}: the same compact form as a schema's output.
    const schema = JSON.stringify(format.type === 'json_object' ? { type: 'object' } : format.schema);
    let compiled = cache.get(schema);
    if (!compiled) {
      compiled = jsonSchemaGrammar(schema).then((ebnf) => compiler.compileGrammar(ebnf)).catch((err: unknown) => {
        cache.delete(schema);
        throw new GrammarError(errorText(err));
      });
      cache.set(schema, compiled);
      if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
    }
    return compiled;
  };

  /**
   * The schema's grammar as EBNF, with one fix: in this XGrammar release the character class of strings
   * with a maxLength/minLength does not exclude control characters (which JSON.parse refuses), unlike
   * its unbounded string rule; the fixed class excludes them too.
   */
  const jsonSchemaGrammar = async (schema: string): Promise<string> => {
    const grammar = await xg.Grammar.fromJSONSchema(schema, false, NO_INDENT, SEPARATORS, true);
    try {
      return grammar.toString().replaceAll(LENGTH_BOUNDED_STRING_CHAR, JSON_STRING_CHAR);
    } finally {
      grammar.dispose();
    }
  };

  return {
    async compile(format) {
      const grammar = await compileGrammar(format);
      return {
        format,
        async matcher(): Promise<TokenConstraint> {
          const m = await xg.GrammarMatcher.createGrammarMatcher(grammar);
          return {
            allowed: () => m.getNextTokenBitmask(),
            accept: (id) => m.acceptToken(id),
            isTerminated: () => m.isTerminated(),
            dispose: () => m.dispose(),
          };
        },
      };
    },
    dispose() {
      compiler.dispose();
      info.dispose();
    },
  };
}

/** Emscripten throws C++ exceptions as numbers or Errors whose text is the useful part. */
function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
