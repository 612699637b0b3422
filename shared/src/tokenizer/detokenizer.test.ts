import { describe, expect, it } from 'vitest';
import { createStreamDecoder } from './detokenizer';
import { loadSentencePiece } from './sentencepiece';
import { fixtures, readModel } from './test-fixtures';

const llama = loadSentencePiece(readModel(fixtures.llama));
const nfkc = loadSentencePiece(readModel(fixtures.nfkc));

function streamed(tokenizer: typeof llama, ids: readonly number[]): string[] {
  const decoder = createStreamDecoder(tokenizer);
  const chunks = ids.map((id) => decoder.push(id));
  chunks.push(decoder.flush());
  return chunks;
}

describe('createStreamDecoder', () => {
  it.each([
    ['LLaMA-style', llama, fixtures.llama],
    ['nmt_nfkc', nfkc, fixtures.nfkc],
  ] as const)('%s: pushed chunks + flush equal the Python library decode', (_name, tokenizer, fixture) => {
    const cases = [...fixture.encode, ...fixture.decode];
    for (const c of cases) expect(streamed(tokenizer, c.ids).join('')).toBe(c.decoded);
  });

  it('holds back byte-fallback pieces until their character is complete', () => {
    const id = (piece: string): number => llama.pieceToId(piece)!;
    const ids = [id('\u2581'), id('<0xF0>'), id('<0x9F>'), id('<0x98>'), id('<0x80>'), id('b')];
    expect(streamed(llama, ids)).toEqual(['', '', '', '', '😀', 'b', '']);
  });

  it('never emits U+FFFD mid-character when decoding valid text', () => {
    for (const c of fixtures.llama.encode) {
      if (c.decoded.includes('\uFFFD')) continue;
      for (const chunk of streamed(llama, c.ids)) expect(chunk).not.toContain('\uFFFD');
    }
  });

  it('turns bytes that can never complete a character into U+FFFD right away, and a dangling lead byte at flush', () => {
    const byte = (b: number): number => llama.pieceToId(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!;
    const decoder = createStreamDecoder(llama);
    expect(decoder.push(byte(0xe6))).toBe(''); // could start a 3-byte character
    expect(decoder.push(byte(0x41))).toBe('\uFFFDA'); // not a continuation byte
    expect(decoder.push(byte(0x80))).toBe('\uFFFD'); // a lone continuation byte
    expect(decoder.push(byte(0xe6))).toBe('');
    expect(decoder.push(byte(0x97))).toBe('');
    expect(decoder.flush()).toBe('\uFFFD\uFFFD'); // SentencePiece replaces each byte of a truncated sequence
  });

  it('drops the dummy-prefix space only at the start of the stream', () => {
    const ids = [llama.bos, ...llama.encode('Hello world')];
    expect(streamed(llama, ids).join('')).toBe('Hello world');
    expect(streamed(llama, [...ids, ...llama.encode('again')]).join('')).toBe('Hello world again');
  });

  it('rejects ids outside the vocabulary', () => {
    expect(() => createStreamDecoder(llama).push(llama.vocabSize)).toThrow(/invalid token id 1000/);
  });
});
