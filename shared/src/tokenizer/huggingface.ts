/**
 * Hugging Face `tokenizer.json` (byte-level BPE as in Qwen and LLaMA 3, and every other model type the
 * format describes) through `@huggingface/tokenizers`, the pure-JS port maintained by Hugging Face,
 * so it runs on Node and in Workers alike. Its ids are checked against the Rust `tokenizers` library in
 * tests/tokenizer.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import type { StreamDecoder } from './detokenizer';
import type { TextTokenizer } from './text-tokenizer';

/** Parses tokenizer.json (and tokenizer_config.json when there is one); throws naming what is wrong. */
export function loadHuggingFaceTokenizer(json: string, config: object = {}): TextTokenizer {
  let spec: { model?: { type?: string }; added_tokens?: { id: number; content: string; special: boolean }[] };
  try {
    spec = JSON.parse(json);
  } catch (err) {
    throw new Error(`tokenizer.json is not JSON: ${(err as Error).message}`);
  }
  if (typeof spec !== 'object' || spec === null || typeof spec.model?.type !== 'string') throw new Error('tokenizer.json has no "model" with a "type"');
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(spec, config);
  } catch (err) {
    throw new Error(`unsupported tokenizer.json: ${(err as Error).message}`);
  }
  const vocab = tokenizer.get_vocab(true);
  let vocabSize = 0;
  for (const id of vocab.values()) vocabSize = Math.max(vocabSize, id + 1);
  const special = new Set((spec.added_tokens ?? []).filter((t) => t.special).map((t) => t.id));
  const byteLevel = JSON.stringify(spec).includes('"ByteLevel"');
  // As the tokenizers library decodes (no transformers-style clean-up of spaces before punctuation, which
  // would also make streamed pieces disagree with the whole); it refuses an empty list.
  const decode = (ids: number[], skipSpecial: boolean) =>
    ids.length === 0 ? '' : tokenizer.decode(ids, { skip_special_tokens: skipSpecial, clean_up_tokenization_spaces: false });
  return {
    kind: 'huggingface',
    vocabSize,
    encode: (text) => tokenizer.encode(text, { add_special_tokens: false }).ids,
    decode: (ids) => decode([...ids], true),
    streamDecoder: () => new IncrementalDecoder((ids) => decode(ids, true)),
    tokenText: (id) => decode([id], false),
    grammarVocabulary: () => {
      const tokens: string[] = [];
      for (let id = 0; id < vocabSize; id++) tokens.push(special.has(id) ? '' : (tokenizer.id_to_token(id) ?? ''));
      return { tokens, type: byteLevel ? 'byte_level' : 'byte_fallback' };
    },
  };
}

/**
 * Streaming detokenization as Text Generation Inference and vLLM do it for tokenizers whose tokens do
 * not decode one by one (byte-level pieces of one character, merged spaces): decode a short window of
 * recent ids and emit the text beyond what the window's older part decoded to, holding back while the
 * window ends inside a UTF-8 character (U+FFFD).
 */
class IncrementalDecoder implements StreamDecoder {
  private ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(private readonly decode: (ids: number[]) => string) {}

  push(id: number): string {
    this.ids.push(id);
    const prefix = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.decode(this.ids.slice(this.prefixOffset));
    if (full.length <= prefix.length || full.endsWith('\uFFFD')) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return full.slice(prefix.length);
  }

  flush(): string {
    const prefix = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    return full.slice(prefix.length);
  }
}
