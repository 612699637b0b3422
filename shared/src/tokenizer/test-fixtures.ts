// Reference data written by tests/fixtures/tokenizer/make_tokenizer_fixtures.py with the Python
// `sentencepiece` library; shared by the tokenizer tests.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ChatMessage } from './template';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface EncodeCase {
  text: string;
  ids: number[];
  pieces: string[];
  decoded: string;
}

export interface ModelFixture {
  model: string;
  vocabSize: number;
  bos: number;
  eos: number;
  unk: number;
  pad: number;
  encode: EncodeCase[];
  decode: { ids: number[]; decoded: string }[];
}

export interface ChatFixture {
  messages: ChatMessage[];
  prompt: string;
  ids: number[];
  placeholders: { modality: 'image' | 'audio' | 'video'; index: number }[];
}

export interface TokenizerFixtures {
  llama: ModelFixture;
  nfkc: ModelFixture;
  unused: ModelFixture;
  chat: ChatFixture[];
}

export const fixtures: TokenizerFixtures = JSON.parse(
  readFileSync(`${REPO_ROOT}tests/fixtures/tokenizer/expected.json`, 'utf8'),
);

export function readModel(fixture: ModelFixture): Uint8Array {
  return new Uint8Array(readFileSync(`${REPO_ROOT}${fixture.model}`));
}
