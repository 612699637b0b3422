/**
 * A bundle with a Hugging Face tokenizer.json served end to end: `convert --tokenizer` on the tiny 4e
 * checkpoint (its own tokenizer.model replaced by the byte-level BPE fixture), the official openai
 * client, and the Rust `tokenizers` library as the reference for prompt ids and decoded text.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import OpenAI from 'openai';
import { Tokenizer as RustTokenizer } from 'tokenizers';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { buildPrompt } from '@unimoe/shared/tokenizer/index';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { FIXTURES, modelFixture } from '../helpers/fixtures';
import { makeTempDir } from '../helpers/tmp';

const TOKENIZER = join(FIXTURES, 'tokenizer/byte-level-bpe/tokenizer.json');
const USER = 'Hello there, café 🙂';
const BOS = 1;
const EOS = 2;

let server: RunningServer;
let cleanup: () => Promise<void>;
let client: OpenAI;
let rust: RustTokenizer;
let manifest: { tokenizer: Record<string, unknown> };

beforeAll(async () => {
  const tmp = await makeTempDir('hf-serve');
  const bundle = join(tmp.dir, 'bundle');
  await convertCheckpoint({ checkpointDir: modelFixture('unimoe-4e'), bundleDir: bundle, name: 'tiny-bpe', tokenizer: TOKENIZER });
  manifest = JSON.parse(await readFile(join(bundle, 'manifest.json'), 'utf8'));
  server = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/db.db`, api: { noAuth: true } });
  cleanup = async () => {
    await server.close();
    await tmp.cleanup();
  };
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  rust = RustTokenizer.fromFile(TOKENIZER);
});
afterAll(async () => {
  await cleanup?.();
});

/** The vicuna_v1 prompt as the reference chunks it: BOS, each text part encoded alone, EOS parts as the EOS id. */
async function referencePromptIds(user: string): Promise<number[]> {
  const ids = [BOS];
  for (const part of buildPrompt([{ role: 'user', content: user }])) {
    if (part.type === 'text') ids.push(...(await rust.encode(part.text, null, { addSpecialTokens: false })).getIds());
    else if (part.type === 'eos') ids.push(EOS);
  }
  return ids;
}

it('the manifest records the Hugging Face tokenizer and its size', () => {
  expect(manifest.tokenizer).toMatchObject({ kind: 'huggingface', file: 'tokenizer.json', bos: BOS, eos: EOS, vocabSize: 625 });
});

it('chat: prompt ids and the decoded completion match the Rust tokenizers library', async () => {
  const want = await referencePromptIds(USER);
  const res = await client.chat.completions.create({ model: 'tiny-bpe', messages: [{ role: 'user', content: USER }], max_tokens: 12, temperature: 0, logprobs: true });
  expect(res.usage!.prompt_tokens).toBe(want.length);
  const direct = await server.engine.generate({ promptIds: want, params: { maxTokens: 12, temperature: 0, topP: 1, topK: 0 } });
  const ids = direct.ids.filter((id) => id !== EOS);
  expect(res.choices[0]!.message.content).toBe(await rust.decode(ids, true));
  expect(res.choices[0]!.logprobs!.content!.map((t) => t.token)).toEqual(await Promise.all(direct.ids.map((id) => rust.decode([id], false))));
});

it('completions stream the same text as the whole decode, with byte-level pieces joined correctly', async () => {
  const json = await client.completions.create({ model: 'tiny-bpe', prompt: USER, max_tokens: 24, temperature: 0.9, seed: 4 });
  const chunks: string[] = [];
  for await (const c of await client.completions.create({ model: 'tiny-bpe', prompt: USER, max_tokens: 24, temperature: 0.9, seed: 4, stream: true })) chunks.push(c.choices[0]?.text ?? '');
  expect(chunks.join('')).toBe(json.choices[0]!.text);
  const ids = [BOS, ...(await rust.encode(USER, null, { addSpecialTokens: false })).getIds()];
  expect(json.usage!.prompt_tokens).toBe(ids.length);
});

it('structured output over a byte-level vocabulary parses', async () => {
  const schema = { type: 'object', properties: { n: { type: 'integer', minimum: 0, maximum: 99 }, ok: { type: 'boolean' } }, required: ['n', 'ok'], additionalProperties: false };
  const res = await client.chat.completions.create({ model: 'tiny-bpe', messages: [{ role: 'user', content: USER }], max_tokens: 60, temperature: 1, seed: 2, n: 3, response_format: { type: 'json_schema', json_schema: { name: 's', schema } } });
  for (const c of res.choices) {
    expect(c.finish_reason).toBe('stop');
    const v = JSON.parse(c.message.content!);
    expect(Object.keys(v).sort()).toEqual(['n', 'ok']);
    expect(Number.isInteger(v.n) && v.n >= 0 && v.n <= 99).toBe(true);
  }
});
