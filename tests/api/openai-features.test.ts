// The OpenAI surface beyond plain chat, end to end with the official openai client against a real
// server on the tiny Uni-MoE 4e bundle: n, seed, logprobs, stop ids, penalties, min_tokens,
// max_completion_tokens, POST /v1/completions and response_format. Numbers are checked against the
// float64 reference forward (tests/reference), the Python sentencepiece library and ajv.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Ajv from 'ajv';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { loadReferenceModel, type ReferenceModel } from '../reference/reference-model';
import { modelFixture } from '../helpers/fixtures';
import { makeTempDir } from '../helpers/tmp';
import { convertTinyBundle, MODEL, pythonSentencePiece, vicunaPrompt } from './helpers';

const USER = 'Tell me a story';
const EOS = 2;
type Body = Record<string, unknown>;

let server: RunningServer;
let cleanup: () => Promise<void>;
let client: OpenAI;
let reference: ReferenceModel;
let promptIds: number[];
let greedy: number[];

const chat = (extra: Body = {}) =>
  client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: USER }], max_tokens: 8, temperature: 0, ...extra } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming);
const complete = (extra: Body) => client.completions.create({ model: MODEL, max_tokens: 8, temperature: 0, ...extra } as unknown as OpenAI.CompletionCreateParamsNonStreaming);
const decode = (ids: number[]) => pythonSentencePiece({ decode: [ids.filter((id) => id !== EOS)] }).decoded[0]!;
async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const c of stream) out.push(c);
  return out;
}

/** Float64 log-softmax of a reference logits row. */
function logSoftmax(logits: Float64Array): Float64Array {
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  let sum = 0;
  for (const x of logits) sum += Math.exp(x - max);
  const lse = max + Math.log(sum);
  return logits.map((x) => x - lse);
}
const topOf = (lp: Float64Array, k: number) => Array.from(lp, (v, id) => ({ v, id })).sort((a, b) => b.v - a.v || a.id - b.id).slice(0, k);

beforeAll(async () => {
  const tmp = await makeTempDir('api-features');
  const bundle = await convertTinyBundle(tmp.dir);
  server = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/db.db`, api: { noAuth: true, requestsPerMinute: 0, maxConcurrentPerKey: 0 } });
  cleanup = async () => {
    await server.close();
    await tmp.cleanup();
  };
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  reference = await loadReferenceModel(modelFixture('unimoe-4e'));
  promptIds = pythonSentencePiece({ encode: [vicunaPrompt(USER)] }).encoded[0]!;
  greedy = reference.greedy(promptIds, 8);
  expect(greedy.slice(0, 8)).not.toContain(EOS); // the checks below assume 8 tokens without EOS
});
afterAll(async () => {
  await cleanup?.();
});

describe('n and seed', () => {
  it('n greedy choices each equal the reference greedy text; usage counts every choice', async () => {
    const res = await chat({ n: 3 });
    expect(res.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    for (const c of res.choices) expect(c.message.content).toBe(decode(greedy));
    expect(res.usage).toEqual({ prompt_tokens: promptIds.length, completion_tokens: 24, total_tokens: promptIds.length + 24 });
  });

  it('seeded sampling: reproducible, choice 0 equals n=1, streamed choices equal the JSON ones', async () => {
    const sampled = { temperature: 1.3, seed: 99, n: 3 };
    const a = await chat(sampled);
    const b = await chat(sampled);
    const one = await chat({ ...sampled, n: 1 });
    expect(b.choices.map((c) => c.message.content)).toEqual(a.choices.map((c) => c.message.content));
    expect(one.choices[0]!.message.content).toBe(a.choices[0]!.message.content);
    expect(new Set(a.choices.map((c) => c.message.content)).size).toBeGreaterThan(1);

    const chunks = await collect(await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: USER }], max_tokens: 8, ...sampled, stream: true, stream_options: { include_usage: true } }));
    const text = ['', '', ''];
    const finish: (string | null)[] = [null, null, null];
    for (const ch of chunks) {
      for (const c of ch.choices) {
        text[c.index] += c.delta.content ?? '';
        if (c.finish_reason) finish[c.index] = c.finish_reason;
      }
    }
    expect(text).toEqual(a.choices.map((c) => c.message.content));
    expect(finish).toEqual(a.choices.map((c) => c.finish_reason));
    expect(chunks.at(-1)!.usage).toEqual(a.usage);
  });
});

describe('stop strings per choice', () => {
  it('each of n choices ends at its own first stop string; the others go on', async () => {
    const free = await chat({ temperature: 1.3, seed: 21, n: 3, max_tokens: 16 });
    const texts = free.choices.map((c) => c.message.content!);
    const stop = texts[1]!.slice(3, 5); // occurs in choice 1 at least
    const cut = await chat({ temperature: 1.3, seed: 21, n: 3, max_tokens: 16, stop });
    cut.choices.forEach((c, i) => {
      const at = texts[i]!.indexOf(stop);
      expect(c.message.content).toBe(at >= 0 ? texts[i]!.slice(0, at) : texts[i]);
      expect(c.finish_reason).toBe(at >= 0 ? 'stop' : free.choices[i]!.finish_reason);
    });
  });
});

describe('logprobs', () => {
  it('chat: each token and its top_logprobs are the float64 log-softmax of the reference logits', async () => {
    const res = await chat({ logprobs: true, top_logprobs: 4, max_tokens: 5 });
    const content = res.choices[0]!.logprobs!.content!;
    expect(content).toHaveLength(5);
    const tokenizer = pythonTokenTexts();
    for (let i = 0; i < 5; i++) {
      const lp = logSoftmax(reference.forward([...promptIds, ...greedy.slice(0, i)]));
      expect(content[i]!.token).toBe(tokenizer(greedy[i]!));
      expect(content[i]!.logprob).toBeCloseTo(lp[greedy[i]!]!, 4);
      expect(content[i]!.bytes).toEqual(Array.from(new TextEncoder().encode(content[i]!.token)));
      const top = topOf(lp, 4);
      expect(content[i]!.top_logprobs.map((t) => t.token)).toEqual(top.map((t) => tokenizer(t.id)));
      content[i]!.top_logprobs.forEach((t, k) => expect(t.logprob).toBeCloseTo(top[k]!.v, 4));
    }
  });

  it('chat streaming: the chunks carry the same logprobs, in order', async () => {
    const json = await chat({ logprobs: true, top_logprobs: 2, max_tokens: 6 });
    const chunks = await collect(await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: USER }], max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2, stream: true }));
    const streamed = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    expect(streamed).toEqual(json.choices[0]!.logprobs!.content);
  });

  it('completions: echo + logprobs report the prompt tokens (null first) and the completion, against the reference', async () => {
    const ids = promptIds.slice(0, 10);
    const res = await complete({ prompt: ids, echo: true, logprobs: 3, max_tokens: 4 });
    const want = reference.greedy(ids, 4);
    const all = reference.forwardAll([...ids, ...want.slice(0, 3)]).map(logSoftmax);
    const lp = res.choices[0]!.logprobs!;
    expect(lp.tokens).toHaveLength(ids.length + 4);
    expect(lp.token_logprobs![0]).toBeNull();
    expect(lp.top_logprobs![0]).toBeNull();
    const seq = [...ids, ...want];
    for (let q = 1; q < seq.length; q++) {
      expect(lp.token_logprobs![q]).toBeCloseTo(all[q - 1]![seq[q]!]!, 4);
      expect(Object.keys(lp.top_logprobs![q]!)).toHaveLength(3);
    }
    expect(res.choices[0]!.text).toBe(decode(ids) + decode(want));
    // text_offset walks the token texts.
    for (let q = 1; q < seq.length; q++) expect(lp.text_offset![q]).toBe(lp.text_offset![q - 1]! + lp.tokens![q - 1]!.length);
  });
});

describe('prompt scoring (max_tokens 0)', () => {
  it('echo + logprobs + max_tokens 0: the prompt alone, its log probabilities against the reference, nothing generated', async () => {
    const ids = promptIds.slice(0, 12);
    const res = await complete({ prompt: ids, echo: true, logprobs: 1, max_tokens: 0 });
    const all = reference.forwardAll(ids).map(logSoftmax);
    const lp = res.choices[0]!.logprobs!;
    expect(res.choices[0]!.text).toBe(decode(ids));
    expect(lp.token_logprobs).toHaveLength(ids.length);
    expect(lp.token_logprobs![0]).toBeNull();
    for (let q = 1; q < ids.length; q++) expect(lp.token_logprobs![q]).toBeCloseTo(all[q - 1]![ids[q]!]!, 4);
    expect(res.usage).toEqual({ prompt_tokens: ids.length, completion_tokens: 0, total_tokens: ids.length });
    await expect(complete({ prompt: ids, max_tokens: 0 })).rejects.toMatchObject({ status: 400, param: 'max_tokens' });
  });
});

describe('stopping and length', () => {
  it('stop_token_ids ends at that id (counted, not shown); min_tokens holds it back', async () => {
    const stopped = await chat({ stop_token_ids: [greedy[2]] });
    expect(stopped.choices[0]!).toMatchObject({ finish_reason: 'stop', message: { content: decode(greedy.slice(0, 2)) } });
    expect(stopped.usage!.completion_tokens).toBe(3);
    const held = await chat({ stop_token_ids: [greedy[0]], min_tokens: 3 });
    expect(held.usage!.completion_tokens).toBeGreaterThanOrEqual(3);
    const early = await chat({ stop_token_ids: [greedy[0]] });
    expect(early.usage!.completion_tokens).toBe(1);
  });

  it('max_completion_tokens caps the output; user is accepted', async () => {
    const res = await chat({ max_tokens: undefined, max_completion_tokens: 3, user: 'someone' });
    expect(res.choices[0]!).toMatchObject({ finish_reason: 'length', message: { content: decode(greedy.slice(0, 3)) } });
    expect(res.usage!.completion_tokens).toBe(3);
  });
});

describe('logit_bias', () => {
  it('-100 rules out the greedy token (the next best by the reference logits comes instead); +100 forces a token', async () => {
    const logits = reference.forward(promptIds);
    const second = Array.from(logits, (v, id) => ({ v, id })).sort((a, b) => b.v - a.v)[1]!.id;
    const banned = await chat({ logit_bias: { [greedy[0]!]: -100 }, max_tokens: 1 });
    expect(banned.choices[0]!.message.content).toBe(decode([second]));
    const forced = await chat({ logit_bias: { 500: 100 }, max_tokens: 3, logprobs: true });
    expect(forced.choices[0]!.message.content).toBe(decode([500, 500, 500]));
    // Log probabilities stay those of the model, not of the biased row.
    expect(forced.choices[0]!.logprobs!.content![0]!.logprob).toBeCloseTo(logSoftmax(logits)[500]!, 4);
  });
});

describe('ignore_eos', () => {
  it('with the bundle EOS moved to the second greedy token: it stops there, unless ignore_eos', async () => {
    const tmp = await makeTempDir('api-ignore-eos');
    const bundle = await convertTinyBundle(tmp.dir);
    const path = join(bundle, 'manifest.json');
    const manifest = JSON.parse(await readFile(path, 'utf8'));
    manifest.config.eos = manifest.tokenizer.eos = greedy[1];
    await writeFile(path, JSON.stringify(manifest));
    const moved = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/db.db`, api: { noAuth: true } });
    try {
      const c = new OpenAI({ baseURL: `${moved.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const ask = (extra: Body) => c.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: USER }], max_tokens: 8, temperature: 0, ...extra } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming);
      const stopped = await ask({});
      expect(stopped.choices[0]).toMatchObject({ finish_reason: 'stop', message: { content: decode(greedy.slice(0, 1)) } });
      expect(stopped.usage!.completion_tokens).toBe(2);
      const ignored = await ask({ ignore_eos: true });
      expect(ignored.choices[0]).toMatchObject({ finish_reason: 'length', message: { content: decode(greedy) } });
    } finally {
      await moved.close();
      await tmp.cleanup();
    }
  });
});

describe('penalties', () => {
  /** vLLM's formula over reference float64 logits: repetition on prompt + output, then frequency and presence on output. */
  function penalisedGreedy(prompt: number[], p: { presence: number; frequency: number; repetition: number }, steps: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < steps; i++) {
      const logits = reference.forward([...prompt, ...out]);
      let best = -1;
      let bestValue = -Infinity;
      logits.forEach((x, id) => {
        const count = out.filter((t) => t === id).length;
        let v = prompt.includes(id) || count > 0 ? (x > 0 ? x / p.repetition : x * p.repetition) : x;
        v -= p.frequency * count + (count > 0 ? p.presence : 0);
        if (v > bestValue) [best, bestValue] = [id, v];
      });
      out.push(best);
    }
    return out;
  }

  it.each([
    { presence: 1.5, frequency: 0, repetition: 1 },
    { presence: 0, frequency: 2, repetition: 1 },
    { presence: 0.3, frequency: 0.6, repetition: 1.6 },
  ])('greedy with %o equals the formula on the reference logits', async (p) => {
    const res = await chat({ presence_penalty: p.presence, frequency_penalty: p.frequency, repetition_penalty: p.repetition, max_tokens: 12 });
    const want = penalisedGreedy(promptIds, p, 12);
    expect(res.choices[0]!.message.content).toBe(decode(want.slice(0, want.includes(EOS) ? want.indexOf(EOS) : 12)));
  });

  it('the penalties change this output (the checks above are not vacuous)', async () => {
    const plain = reference.greedy(promptIds, 12);
    expect(penalisedGreedy(promptIds, { presence: 0, frequency: 2, repetition: 1 }, 12)).not.toEqual(plain);
  });
});

describe('POST /v1/completions', () => {
  it('a text prompt: BOS + the text ids, continued greedily; a batch of prompts gives prompt x n choices in order', async () => {
    const text = 'Once upon a time';
    const ids = pythonSentencePiece({ encode: [text] }).encoded[0]!;
    const res = await complete({ prompt: text });
    expect(res.object).toBe('text_completion');
    expect(res.id).toMatch(/^cmpl-/);
    expect(res.usage).toEqual({ prompt_tokens: ids.length, completion_tokens: 8, total_tokens: ids.length + 8 });
    expect(res.choices[0]!.text).toBe(decode(reference.greedy(ids, 8)));

    const other = [1, 450, 996, 173, 54];
    const batch = await complete({ prompt: [ids, other], n: 2, max_tokens: 3 });
    expect(batch.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(batch.choices.map((c) => c.text)).toEqual([0, 0, 1, 1].map((i) => decode(reference.greedy([ids, other][i]!, 3))));
    expect(batch.usage!.prompt_tokens).toBe(ids.length + other.length);
  });

  it('streams text chunks (echo first) that join to the JSON text, with usage', async () => {
    const json = await complete({ prompt: 'Hello', echo: true, max_tokens: 6 });
    const chunks = await collect(await client.completions.create({ model: MODEL, prompt: 'Hello', echo: true, max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } }));
    expect(chunks.flatMap((c) => c.choices.map((x) => x.text)).join('')).toBe(json.choices[0]!.text);
    expect(json.choices[0]!.text.startsWith('Hello')).toBe(true);
    expect(chunks.at(-1)!.usage).toEqual(json.usage);
  });

  it('streams echo + logprobs: the chunks\' arrays join to the JSON ones (prompt tokens first, then each piece)', async () => {
    const body = { prompt: 'Once upon a time', echo: true, logprobs: 2, max_tokens: 5, temperature: 0.9, seed: 8, n: 2 };
    const json = await complete(body);
    const chunks = await collect(await client.completions.create({ model: MODEL, ...body, stream: true } as OpenAI.CompletionCreateParamsStreaming));
    for (const choice of json.choices) {
      const mine = chunks.flatMap((c) => c.choices.filter((x) => x.index === choice.index));
      const join = <K extends 'tokens' | 'token_logprobs' | 'top_logprobs' | 'text_offset'>(k: K) => mine.flatMap((x) => (x.logprobs?.[k] ?? []) as unknown[]);
      for (const k of ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset'] as const) expect(join(k)).toEqual(choice.logprobs![k]);
      expect(mine.map((x) => x.text).join('')).toBe(choice.text);
    }
  });

  it('refuses what it does not do, naming the parameter', async () => {
    await expect(complete({ prompt: 'x', suffix: 'y' })).rejects.toMatchObject({ status: 400, param: 'suffix', code: 'unsupported_parameter' });
    await expect(complete({ prompt: [1, 5_000_000] })).rejects.toMatchObject({ status: 400, param: 'prompt[1]' });
    await expect(complete({ prompt: 'x'.repeat(20_000) })).rejects.toMatchObject({ status: 400, code: 'context_length_exceeded' });
  });
});

describe('response_format', () => {
  const schema = {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 6 },
      mood: { enum: ['happy', 'sad', 'calm'] },
      ok: { type: 'boolean' },
      tags: { type: 'array', items: { type: 'string', enum: ['a', 'b'] }, maxItems: 3 },
    },
    required: ['name', 'mood', 'ok', 'tags'],
    additionalProperties: false,
  };
  const validate = new Ajv({ strict: true }).compile(schema);

  it('json_schema: every choice parses and validates (greedy and sampled, chat and completions)', async () => {
    const format = { type: 'json_schema', json_schema: { name: 'person', schema, strict: true } };
    const outputs: string[] = [];
    const greedyRes = await chat({ response_format: format, max_tokens: 200 });
    const sampled = await chat({ response_format: format, max_tokens: 200, temperature: 1, seed: 5, n: 4 });
    const text = await complete({ prompt: 'JSON:', response_format: format, max_tokens: 200, temperature: 0.8, seed: 3, n: 2 });
    outputs.push(...[...greedyRes.choices, ...sampled.choices].map((c) => c.message.content!), ...text.choices.map((c) => c.text));
    for (const c of [...greedyRes.choices, ...sampled.choices, ...text.choices]) expect(c.finish_reason).toBe('stop');
    for (const out of outputs) {
      const value = JSON.parse(out);
      expect(validate(value), `${out}: ${JSON.stringify(validate.errors)}`).toBe(true);
    }
    // Unconstrained, the same requests are not JSON at all.
    const free = (await chat({ max_tokens: 20 })).choices[0]!.message.content!;
    expect(() => JSON.parse(free)).toThrow();
  });

  it('json_object: the output is a JSON object', async () => {
    const res = await chat({ response_format: { type: 'json_object' }, max_tokens: 300, temperature: 0.7, seed: 11, n: 3 });
    for (const c of res.choices) {
      if (c.finish_reason !== 'stop') continue; // max_tokens may cut a long object short, as OpenAI documents
      const value = JSON.parse(c.message.content!);
      expect(typeof value === 'object' && value !== null && !Array.isArray(value)).toBe(true);
    }
    expect(res.choices.some((c) => c.finish_reason === 'stop')).toBe(true);
  });

  it('streams a constrained output whose pieces join to valid JSON', async () => {
    const chunks = await collect(
      await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: USER }], max_tokens: 200, temperature: 0, stream: true, response_format: { type: 'json_schema', json_schema: { name: 'p', schema } } } as OpenAI.ChatCompletionCreateParamsStreaming),
    );
    expect(validate(JSON.parse(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')))).toBe(true);
  });

  it('a schema the grammar engine cannot compile is a 400 naming it', async () => {
    await expect(chat({ response_format: { type: 'json_schema', json_schema: { name: 'bad', schema: { type: 'object', properties: { a: { $ref: '#/nowhere' } } } } } })).rejects.toMatchObject({
      status: 400,
      param: 'response_format.json_schema.schema',
    });
  });
});

/** id -> the token text logprobs show, from Python sentencepiece's pieces (▁ as a space, <0xNN> as that byte). */
function pythonTokenTexts(): (id: number) => string {
  const pieces = pythonSentencePiece({ pieces: true }) as { pieces: string[] };
  return (id) => {
    const piece = pieces.pieces[id]!;
    const byte = /^<0x([0-9A-F]{2})>$/.exec(piece);
    if (byte) return new TextDecoder().decode(Uint8Array.of(parseInt(byte[1]!, 16)));
    return piece.replaceAll('\u2581', ' ');
  };
}
