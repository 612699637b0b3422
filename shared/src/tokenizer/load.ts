/** A bundle's tokenizer as a TextTokenizer, whichever kind the manifest records. */
import { createStreamDecoder } from './detokenizer';
import { loadHuggingFaceTokenizer } from './huggingface';
import { PieceType } from './model-proto';
import { SPACE_SYMBOL } from './normalizer';
import { loadSentencePiece, type SentencePieceTokenizer } from './sentencepiece';
import type { TextTokenizer, TokenizerKind } from './text-tokenizer';

export function loadTokenizer(kind: TokenizerKind, bytes: Uint8Array): TextTokenizer {
  return kind === 'huggingface' ? loadHuggingFaceTokenizer(new TextDecoder().decode(bytes)) : sentencePieceText(loadSentencePiece(bytes));
}

/** The kind a tokenizer file holds, from its name: `*.json` is Hugging Face's format, anything else SentencePiece. */
export function tokenizerKindOf(fileName: string): TokenizerKind {
  return fileName.endsWith('.json') ? 'huggingface' : 'sentencepiece';
}

export function sentencePieceText(sp: SentencePieceTokenizer): TextTokenizer {
  const bytePiece = new TextDecoder();
  return {
    kind: 'sentencepiece',
    vocabSize: sp.vocabSize,
    encode: (text) => sp.encode(text),
    decode: (ids) => sp.decode(ids),
    streamDecoder: () => createStreamDecoder(sp),
    tokenText(id) {
      const piece = sp.pieces[id];
      if (!piece) throw new RangeError(`invalid token id ${id}: the vocabulary has ${sp.vocabSize} pieces`);
      if (piece.type === PieceType.BYTE) return bytePiece.decode(Uint8Array.of(sp.decoding.byteValues[id]!));
      if (piece.type === PieceType.NORMAL || piece.type === PieceType.USER_DEFINED) return piece.piece.replaceAll(SPACE_SYMBOL, ' ');
      return piece.piece;
    },
    grammarVocabulary: () => ({
      tokens: sp.pieces.map((p) => (p.type === PieceType.NORMAL || p.type === PieceType.USER_DEFINED || p.type === PieceType.BYTE ? p.piece : '')),
      type: 'byte_fallback',
    }),
  };
}
