export { loadSentencePiece, type SentencePieceTokenizer } from './sentencepiece';
export { createStreamDecoder, type StreamDecoder, type DecodingRules } from './detokenizer';
export { parseModelProto, PieceType, ModelType } from './model-proto';
export type { ModelPiece, TrainerSpec, NormalizerSpec, SentencePieceModelProto } from './model-proto';
export {
  VICUNA_V1_SYSTEM,
  buildPrompt,
  encodePrompt,
  renderVicunaV1,
  splitPrompt,
  type ChatMessage,
  type ChatRole,
  type EncodedPrompt,
  type Modality,
  type PromptPart,
} from './template';
export { loadTokenizer, sentencePieceText, tokenizerKindOf } from './load';
export { loadHuggingFaceTokenizer } from './huggingface';
export type { TextTokenizer, TokenizerKind, GrammarVocabType } from './text-tokenizer';
