// UTF-8 decoding with SentencePiece's exact error rule (string_util::DecodeUTF8): a sequence that is
// truncated, overlong, a surrogate or above U+10FFFF counts as one invalid byte, replaced by U+FFFD,
// and decoding resumes at the next byte. TextDecoder replaces whole "maximal subparts" instead, which
// gives fewer U+FFFD for truncated sequences, so it cannot be used where ids must match the library.

const REPLACEMENT_CHARACTER = '\uFFFD';

const isTrailByte = (b: number): boolean => (b & 0xc0) === 0x80;
const isValidCodepoint = (cp: number): boolean => cp < 0xd800 || (cp >= 0xe000 && cp <= 0x10ffff);

/** Byte length a sequence starting with `lead` claims to have; 0 when `lead` cannot start one. */
function utf8SequenceLength(lead: number): number {
  if (lead < 0x80) return 1;
  if ((lead & 0xe0) === 0xc0) return 2;
  if ((lead & 0xf0) === 0xe0) return 3;
  if ((lead & 0xf8) === 0xf0) return 4;
  return 0;
}

/**
 * Decodes one character at `bytes[start]`, looking no further than `end`.
 * Returns the code point and its byte length, or `codePoint: -1, length: 1` when invalid.
 */
export function decodeUtf8Char(
  bytes: ArrayLike<number>,
  start: number,
  end: number,
): { codePoint: number; length: number } {
  const available = end - start;
  const b0 = bytes[start]!;
  const need = utf8SequenceLength(b0);
  if (need === 1) return { codePoint: b0, length: 1 };
  if (need > 1 && available >= need) {
    let cp = b0 & (0xff >> (need + 1));
    let ok = true;
    for (let k = 1; k < need; k++) {
      const b = bytes[start + k]!;
      ok &&= isTrailByte(b);
      cp = (cp << 6) | (b & 0x3f);
    }
    const minimum = need === 2 ? 0x80 : need === 3 ? 0x800 : 0x10000;
    if (ok && cp >= minimum && isValidCodepoint(cp)) return { codePoint: cp, length: need };
  }
  return { codePoint: -1, length: 1 };
}

/**
 * Decodes `bytes` into text with SentencePiece's error rule. When `final` is false, a trailing
 * sequence that is still incomplete (but could become valid) is left undecoded; `consumed` says how
 * many bytes were used.
 */
export function decodeUtf8Bytes(bytes: readonly number[], final: boolean): { text: string; consumed: number } {
  let text = '';
  let pos = 0;
  while (pos < bytes.length) {
    if (!final && isIncompletePrefix(bytes, pos)) break;
    const { codePoint, length } = decodeUtf8Char(bytes, pos, bytes.length);
    text += codePoint < 0 ? REPLACEMENT_CHARACTER : String.fromCodePoint(codePoint);
    pos += length;
  }
  return { text, consumed: pos };
}

/** True when bytes[pos..] is shorter than its lead byte claims and every byte so far is a trail byte. */
function isIncompletePrefix(bytes: readonly number[], pos: number): boolean {
  const need = utf8SequenceLength(bytes[pos]!);
  if (need <= 1 || bytes.length - pos >= need) return false;
  for (let k = pos + 1; k < bytes.length; k++) if (!isTrailByte(bytes[k]!)) return false;
  return true;
}
