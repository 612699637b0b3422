/**
 * What serving needs from a tokenizer, whichever kind the bundle holds: SentencePiece `tokenizer.model`
 * (our own implementation, sentencepiece.ts) or a Hugging Face `tokenizer.json` (huggingface.ts).
 */
import type { StreamDecoder } from './detokenizer';

export type TokenizerKind = 'sentencepiece' | 'huggingface';

/** How a grammar engine must read the vocabulary's surface strings (xgrammar's VocabType names). */
export type GrammarVocabType = 'byte_fallback' | 'byte_level';

export interface TextTokenizer {
  readonly kind: TokenizerKind;
  /** Ids the tokenizer defines (special tokens included). */
  readonly vocabSize: number;
  /** Text -> ids, adding no special tokens. */
  encode(text: string): number[];
  /** Ids -> text, special tokens left out. */
  decode(ids: readonly number[]): string;
  /** Incremental decode for streaming: the pieces concatenate to decode(ids). */
  streamDecoder(): StreamDecoder;
  /** One token's own text as logprobs show it (special tokens by their name). */
  tokenText(id: number): string;
  /** Each id's surface string for a grammar engine ('' marks a special id) and how to read it. */
  grammarVocabulary(): { tokens: string[]; type: GrammarVocabType };
}
