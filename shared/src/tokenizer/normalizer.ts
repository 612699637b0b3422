// SentencePiece's Normalizer::Normalize: per-character rewriting (identity, or the model's precompiled
// rules), optional removal of leading/trailing/repeated spaces, the dummy-prefix space, and spaces
// escaped as U+2581. Works on UTF-8 bytes because the precompiled rules are keyed by bytes.
import { PrecompiledCharsMap } from './charsmap';
import type { NormalizerSpec } from './model-proto';
import { decodeUtf8Char } from './utf8';

export const SPACE_SYMBOL = '\u2581';

const SPACE = 0x20;
const SPACE_SYMBOL_BYTES = [0xe2, 0x96, 0x81];
const REPLACEMENT_BYTES = new Uint8Array([0xef, 0xbf, 0xbd]);
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

export class Normalizer {
  private readonly charsMap: PrecompiledCharsMap | null;
  /** User-defined symbols by first byte, longest first: they pass through normalization untouched. */
  private readonly userSymbols = new Map<number, Uint8Array[]>();

  constructor(
    private readonly spec: NormalizerSpec,
    userDefinedSymbols: readonly string[],
  ) {
    this.charsMap = spec.precompiledCharsmap.length > 0 ? PrecompiledCharsMap.parse(spec.precompiledCharsmap) : null;
    for (const symbol of userDefinedSymbols) {
      const bytes = utf8Encoder.encode(symbol);
      const list = this.userSymbols.get(bytes[0]!) ?? [];
      list.push(bytes);
      list.sort((a, b) => b.length - a.length);
      this.userSymbols.set(bytes[0]!, list);
    }
  }

  normalize(text: string): string {
    const input = utf8Encoder.encode(text);
    const { removeExtraWhitespaces, escapeWhitespaces, addDummyPrefix } = this.spec;
    let pos = 0;
    if (removeExtraWhitespaces) {
      while (pos < input.length) {
        const [piece, consumed] = this.normalizePrefix(input, pos);
        if (!(piece.length === 1 && piece[0] === SPACE)) break;
        pos += consumed;
      }
    }
    if (pos >= input.length) return '';

    const out: number[] = [];
    const pushSpace = (): void => {
      if (escapeWhitespaces) out.push(...SPACE_SYMBOL_BYTES);
      else out.push(SPACE);
    };
    if (addDummyPrefix) pushSpace();

    let isPrevSpace = removeExtraWhitespaces;
    while (pos < input.length) {
      const [piece, consumed] = this.normalizePrefix(input, pos);
      let start = 0;
      if (isPrevSpace) while (start < piece.length && piece[start] === SPACE) start++;
      if (start < piece.length) {
        for (let k = start; k < piece.length; k++) {
          if (escapeWhitespaces && piece[k] === SPACE) pushSpace();
          else out.push(piece[k]!);
        }
        isPrevSpace = piece[piece.length - 1] === SPACE;
      }
      pos += consumed;
      if (!removeExtraWhitespaces) isPrevSpace = false;
    }

    if (removeExtraWhitespaces) {
      const space = escapeWhitespaces ? SPACE_SYMBOL_BYTES : [SPACE];
      while (endsWith(out, space)) out.length -= space.length;
    }
    return utf8Decoder.decode(new Uint8Array(out));
  }

  /** Normalizer::NormalizePrefix: the replacement for the longest rule at `pos`, and bytes consumed. */
  private normalizePrefix(input: Uint8Array, pos: number): [Uint8Array, number] {
    for (const symbol of this.userSymbols.get(input[pos]!) ?? []) {
      if (startsWithAt(input, pos, symbol)) return [symbol, symbol.length];
    }
    const match = this.charsMap?.longestMatch(input, pos, input.length);
    if (match) return [match.replacement, match.length];
    const { codePoint, length } = decodeUtf8Char(input, pos, input.length);
    if (codePoint < 0) return [REPLACEMENT_BYTES, 1];
    return [input.subarray(pos, pos + length), length];
  }
}

function startsWithAt(bytes: Uint8Array, pos: number, prefix: Uint8Array): boolean {
  if (pos + prefix.length > bytes.length) return false;
  for (let k = 0; k < prefix.length; k++) if (bytes[pos + k] !== prefix[k]) return false;
  return true;
}

function endsWith(bytes: number[], suffix: readonly number[]): boolean {
  if (bytes.length < suffix.length) return false;
  const offset = bytes.length - suffix.length;
  return suffix.every((b, k) => bytes[offset + k] === b);
}
