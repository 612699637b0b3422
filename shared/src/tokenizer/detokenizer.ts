// Ids -> text, as SentencePieceProcessor::Decode does it, one id at a time so that generated tokens
// can be streamed. Byte-fallback pieces are collected and turned into characters only once a character
// is complete (or provably broken), so a stream never shows half of a multi-byte character.
import { PieceType, type ModelPiece } from './model-proto';
import { SPACE_SYMBOL } from './normalizer';
import { decodeUtf8Bytes } from './utf8';

export interface DecodingRules {
  /** Byte value of each BYTE piece (`<0xNN>`), -1 for other pieces. */
  byteValues: Int16Array;
  /** Text shown for the unknown piece (trainer_spec.unk_surface, default " ⁇ "). */
  unkSurface: string;
  /** Drop the leading U+2581 of the first text piece (add_dummy_prefix or remove_extra_whitespaces). */
  stripLeadingSpace: boolean;
  /** remove_extra_whitespaces: keep dropping it until some text has been produced. */
  removeExtraWhitespaces: boolean;
}

/** What a decoder needs from a tokenizer. */
export interface DecodableVocabulary {
  readonly pieces: readonly ModelPiece[];
  readonly decoding: DecodingRules;
}

export interface StreamDecoder {
  /** Adds one id; returns the text it completes (possibly ''). */
  push(id: number): string;
  /** Ends the stream: returns held-back bytes (broken UTF-8 becomes U+FFFD). */
  flush(): string;
}

class SentencePieceStreamDecoder implements StreamDecoder {
  private pendingBytes: number[] = [];
  private producedText = false;
  private atStart = true;
  private leadingSpaceDropped = false;

  constructor(private readonly vocab: DecodableVocabulary) {}

  push(id: number): string {
    const { pieces, decoding } = this.vocab;
    if (!Number.isInteger(id) || id < 0 || id >= pieces.length) {
      throw new RangeError(`invalid token id ${id}: the vocabulary has ${pieces.length} pieces`);
    }
    const piece = pieces[id]!;
    if (piece.type === PieceType.BYTE) {
      this.pendingBytes.push(decoding.byteValues[id]!);
      return this.takeBytes(false);
    }
    let out = this.takeBytes(true);
    if (this.leadingSpaceDropped || this.producedText) this.atStart = false;
    out += this.produce(this.surface(piece));
    return out;
  }

  flush(): string {
    return this.takeBytes(true);
  }

  private surface(piece: ModelPiece): string {
    const { decoding } = this.vocab;
    this.leadingSpaceDropped = false;
    if (piece.type === PieceType.CONTROL) return '';
    if (piece.type === PieceType.UNKNOWN) return decoding.unkSurface;
    let text = piece.piece;
    if (this.atStart && decoding.stripLeadingSpace && text.startsWith(SPACE_SYMBOL)) {
      text = text.slice(SPACE_SYMBOL.length);
      // With remove_extra_whitespaces every leading space goes, so keep looking.
      this.leadingSpaceDropped = !decoding.removeExtraWhitespaces;
    }
    return text.replaceAll(SPACE_SYMBOL, ' ');
  }

  private takeBytes(final: boolean): string {
    if (this.pendingBytes.length === 0) return '';
    const { text, consumed } = decodeUtf8Bytes(this.pendingBytes, final);
    this.pendingBytes = this.pendingBytes.slice(consumed);
    return this.produce(text);
  }

  private produce(text: string): string {
    if (text !== '') this.producedText = true;
    return text;
  }
}

/** Incremental detokenizer: the concatenation of all `push` results and `flush()` equals `decode(ids)`. */
export function createStreamDecoder(tokenizer: DecodableVocabulary): StreamDecoder {
  return new SentencePieceStreamDecoder(tokenizer);
}

/** Whole-sequence decode, the same rules as the stream decoder. */
export function decodeIds(vocab: DecodableVocabulary, ids: readonly number[]): string {
  const decoder = createStreamDecoder(vocab);
  let text = '';
  for (const id of ids) text += decoder.push(id);
  return text + decoder.flush();
}
