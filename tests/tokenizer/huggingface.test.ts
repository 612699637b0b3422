/**
 * Hugging Face tokenizer.json support against the reference library: the Rust `tokenizers` (Hugging
 * Face's own implementation, the same core as Python's `tokenizers`, which cannot be installed here),
 * through its official Node binding. Our path is the pure-JS `@huggingface/tokenizers` (it must also
 * run in Workers). Fixture: a small byte-level BPE trained by tests/fixtures/tokenizer/make_byte_level_bpe.py,
 * as written (Qwen2-style) and rewritten LLaMA-3-style (its pre-tokenizer pattern and ignore_merges).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer as RustTokenizer } from 'tokenizers';
import { describe, expect, it } from 'vitest';
import { loadHuggingFaceTokenizer } from '@unimoe/shared/tokenizer/huggingface';
import { FIXTURES } from '../helpers/fixtures';
import { makeTempDir } from '../helpers/tmp';

const FIXTURE = join(FIXTURES, 'tokenizer/byte-level-bpe/tokenizer.json');
const LLAMA3_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Varied text: prose, code, JSON, digits, whitespace runs, accents (composed and not), CJK, emoji, specials, control chars. */
const CORPUS = [
  'Hello there! How are you today?',
  "I'm fine, thanks. You're WELCOME; they'll see, we'd go, it's done.",
  'The quick brown fox jumps over the lazy dog.',
  '  leading spaces, trailing spaces   ',
  'tabs\tand\nnew\r\nlines\n\n\nand   runs   of    spaces',
  'Numbers: 0 12 345 6789 1234567890 3.14159 -42 1e-9 1,000,000',
  '{"name": "Ada", "age": 36, "tags": ["a", "b"], "ok": true, "x": null}',
  'def main():\n    return [x ** 2 for x in range(10) if x % 3 == 0]',
  'café naïve résumé Straße über façade',
  'cafe\u0301 (decomposed e + combining acute, NFC composes it)',
  '日本語のテキストです。中文文本。한국어 텍스트.',
  'Emoji: 🙂🚀✨ 👩‍👩‍👧 flags 🇫🇷',
  '<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n',
  'special inside words: a<|endoftext|>b',
  'Ünïcödé ÀÉÎÕÜ ąčęėįšųūž Ελληνικά Русский текст עברית العربية',
  'control \u0000\u0001\u007f chars and zero\u200bwidth',
  '',
  ' ',
  "'s 't 're 've 'm 'll 'd 'S 'T",
  'https://example.com/path?q=1&r=two#frag',
  'a'.repeat(200),
];

async function rustReference(path: string, texts: string[]): Promise<{ ids: number[][]; decoded: string[] }> {
  const rust = RustTokenizer.fromFile(path);
  const ids: number[][] = [];
  const decoded: string[] = [];
  for (const t of texts) {
    const encoding = await rust.encode(t, null, { addSpecialTokens: false });
    ids.push(Array.from(encoding.getIds()));
    decoded.push(await rust.decode(ids.at(-1)!, true));
  }
  return { ids, decoded };
}

describe.each([
  ['Qwen2-style', (spec: Record<string, any>) => spec],
  [
    'LLaMA-3-style',
    (spec: Record<string, any>) => {
      spec.pre_tokenizer.pretokenizers[0].pattern.Regex = LLAMA3_PATTERN;
      spec.model.ignore_merges = true;
      return spec;
    },
  ],
])('byte-level BPE tokenizer.json (%s)', (_, variant) => {
  it('encodes the corpus to the same ids as the Rust tokenizers library, and decodes them alike', async () => {
    const tmp = await makeTempDir('hf-tokenizer');
    try {
      const json = JSON.stringify(variant(JSON.parse(await readFile(FIXTURE, 'utf8'))));
      const path = join(tmp.dir, 'tokenizer.json');
      await import('node:fs/promises').then((fs) => fs.writeFile(path, json));
      const ours = loadHuggingFaceTokenizer(json);
      const ref = await rustReference(path, CORPUS);
      CORPUS.forEach((text, i) => {
        expect(ours.encode(text), JSON.stringify(text)).toEqual(ref.ids[i]);
        expect(ours.decode(ref.ids[i]!)).toBe(ref.decoded[i]);
      });
      // Not vacuous: merges apply (fewer ids than bytes) and special tokens come out whole.
      expect(ours.encode(CORPUS[0]!).length).toBeLessThan(new TextEncoder().encode(CORPUS[0]!).length / 2);
      expect(ours.encode(CORPUS[12]!)).toContain(1);
    } finally {
      await tmp.cleanup();
    }
  });
});

describe('streaming decode', () => {
  it('pieces pushed one id at a time concatenate to decode(ids), never splitting a character', async () => {
    const ours = loadHuggingFaceTokenizer(await readFile(FIXTURE, 'utf8'));
    for (const text of CORPUS) {
      const ids = ours.encode(text);
      const stream = ours.streamDecoder();
      const pieces = ids.map((id) => stream.push(id));
      pieces.push(stream.flush());
      for (const p of pieces) expect(p).not.toContain('\uFFFD');
      expect(pieces.join('')).toBe(ours.decode(ids));
    }
  });

  it('rejects a file that is not a tokenizer.json', () => {
    expect(() => loadHuggingFaceTokenizer('{"version": "1.0"}')).toThrow(/no "model" with a "type"/);
    expect(() => loadHuggingFaceTokenizer('not json')).toThrow(/tokenizer\.json is not JSON/);
  });
});
