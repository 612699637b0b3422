// The whole multimodal forward through the engine: CLI-converted tiny Uni-MoE 4e bundle with the three towers
// (image through CLIP, speech through Whisper, audio through BEATs + Q-Former),
// media preprocessed and encoded by the edge pipeline (in-process encoders), spliced into the prompt,
// chunked prefill + continuous batching; checked against the float64 multimodal reference fed the same
// preprocessed features.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readManifest } from '@unimoe/shared/bundle/load';
import { loadSentencePiece, type SentencePieceTokenizer } from '@unimoe/shared/tokenizer/index';
import { buildPrompt, encodePrompt } from '@unimoe/shared/tokenizer/template';
import { createEngine, type Engine } from '@unimoe/edge/engine/engine';
import { LocalEncoderBackend } from '@unimoe/edge/engine/local-encoders';
import { MultimodalPipeline, type MediaItem, type MultimodalPrompt, type PreparedMedia } from '@unimoe/edge/multimodal/pipeline';
import { makeTempDir } from '../helpers/tmp';
import { relativeError } from '../reference/compare';
import type { MultimodalPromptInput } from '../reference/multimodal';
import type { ReferenceInput } from '../reference/reference-model';
import { argmax } from '../reference/math';
import { buildMultimodalFixture, chirpWav, media, type MultimodalFixture } from './setup';

const QUERY = 'Describe the picture, the speech and the sound.';
const STEPS = 5;

let tmp: { dir: string; cleanup: () => Promise<void> };
let fx: MultimodalFixture;
let engine: Engine;
let encoders: LocalEncoderBackend;
let pipeline: MultimodalPipeline;
let tokenizer: SentencePieceTokenizer;
// The image + 35 s speech + 12 s audio prompt, as the engine gets it and as the reference gets it.
let prepared: PreparedMedia[];
let prompt: MultimodalPrompt;
let refInputs: ReferenceInput[];

beforeAll(async () => {
  tmp = await makeTempDir('mm-engine');
  fx = await buildMultimodalFixture(tmp.dir);
  const manifest = await readManifest(fx.bundle);
  tokenizer = loadSentencePiece(new Uint8Array(await readFile(join(fx.bundle, manifest.tokenizer.file))));
  // A small prefill chunk: the 576 image tokens, 100 speech and 50 audio tokens span several chunks.
  engine = await createEngine({ bundleDir: fx.bundle, prefillChunk: 97, maxBatch: 4 });
  encoders = await LocalEncoderBackend.open(fx.bundle, manifest);
  pipeline = new MultimodalPipeline(manifest, encoders);

  // The reference template: `USER: <image>\n<audio>\n{query}` (one <audio> per sound clip), tokenised by the shared template code.
  const encoded = encodePrompt(tokenizer, buildPrompt([{ role: 'user', content: `<image>\n<audio>\n<audio>\n${QUERY}` }]));
  const items: MediaItem[] = [
    { modality: 'image', bytes: media('rgb_64x48.png'), param: 'image' },
    { modality: 'speech', bytes: chirpWav(35), param: 'speech' },
    { modality: 'audio', bytes: chirpWav(12, 22050), param: 'audio' },
  ];
  prepared = await pipeline.prepare(items);
  prompt = await pipeline.embed(pipeline.layout(encoded, prepared), prepared);
  const input: MultimodalPromptInput = { ids: encoded.ids, placeholders: encoded.placeholders, media: prepared };
  refInputs = fx.reference.inputs(input);
});

afterAll(async () => {
  await engine?.close();
  await encoders?.close();
  await tmp?.cleanup();
});

describe('multimodal prompt through the engine vs the float64 reference', () => {
  it('lays the prompt out with 576 image tokens and 50 tokens per 30 s speech or audio chunk', () => {
    expect(prepared.map((p) => [p.modality, p.dims, p.tokens])).toEqual([
      ['image', [1, 3, 336, 336], 576],
      ['speech', [2, 80, 3000], 100],
      ['audio', [1, 2999, 128], 50],
    ]);
    expect(prompt.tokens).toMatchObject({ image: 576, speech: 100, audio: 50, video: 0 });
    expect(prompt.promptIds.length).toBe(prompt.tokens.text + 726);
    expect(refInputs.length).toBe(prompt.promptIds.length);
    // Placeholder positions hold the pad id; the runs sit exactly where the reference puts embeddings.
    for (const run of prompt.embeddings) {
      for (let i = run.index; i < run.index + run.tokens; i++) {
        expect(prompt.promptIds[i]).toBe(0);
        expect(typeof refInputs[i]).not.toBe('number');
      }
    }
  });

  it('encoder outputs match the tower references (image, two speech chunks, one audio chunk)', () => {
    for (const [i, p] of prepared.entries()) {
      expect(relativeError(prompt.embeddings[i]!.data, fx.reference.encode(p))).toBeLessThan(1e-4);
    }
  });

  it('last-position logits within 1e-4 relative of the reference', async () => {
    const got = await engine.logits(prompt.promptIds, { embeddings: prompt.embeddings });
    const want = fx.reference.text.forwardInputs(refInputs);
    expect(relativeError(got, want)).toBeLessThan(1e-4);
    // Media matter: the same ids with the placeholder embeddings looked up give other logits.
    const textOnly = await engine.logits(prompt.promptIds);
    expect(relativeError(textOnly, want)).toBeGreaterThan(1e-2);
  });

  it('greedy tokens equal the reference, alongside a text request in the same batch', async () => {
    const textIds = encodePrompt(tokenizer, buildPrompt([{ role: 'user', content: 'Hello there' }])).ids;
    const greedy = { maxTokens: STEPS, temperature: 0, topP: 1, topK: 0, stopTokenIds: [] };
    const [mm, text] = await Promise.all([
      engine.generate({ promptIds: prompt.promptIds, embeddings: prompt.embeddings, params: greedy }),
      engine.generate({ promptIds: textIds, params: greedy }),
    ]);
    const wantMm = fx.reference.text.greedyInputs(refInputs, STEPS);
    const wantText = fx.reference.text.greedy(textIds, STEPS);
    const eosCut = (ids: number[]) => ids.slice(0, ids.includes(2) ? ids.indexOf(2) + 1 : ids.length);
    expect(mm.ids).toEqual(eosCut(wantMm));
    expect(text.ids).toEqual(eosCut(wantText));
    expect(mm.promptTokens).toBe(prompt.promptIds.length);
    // The reference's first token is well separated (no near-tie that float32 could flip).
    const ref = fx.reference.text.forwardInputs(refInputs);
    const top = argmax(ref);
    const second = Math.max(...Array.from(ref).filter((_, i) => i !== top));
    expect(ref[top]! - second).toBeGreaterThan(1e-3);
  });

  it('refuses embeddings that do not fit the prompt, naming the run', async () => {
    const H = engine.manifest.config.hidden;
    const ids = prompt.promptIds;
    await expect(engine.logits(ids, { embeddings: [{ index: ids.length - 1, tokens: 2, data: new Float32Array(2 * H) }] })).rejects.toThrow(
      /embeddings run at prompt position \d+: index \d+ and tokens 2 must describe a non-empty run inside the \d+-token prompt/,
    );
    await expect(engine.logits(ids, { embeddings: [{ index: 1, tokens: 2, data: new Float32Array(H) }] })).rejects.toThrow(/must be a Float32Array of 2 x 64 values, got 64/);
    const two = [
      { index: 1, tokens: 3, data: new Float32Array(3 * H) },
      { index: 3, tokens: 1, data: new Float32Array(H) },
    ];
    await expect(engine.logits(ids, { embeddings: two })).rejects.toThrow(/position 3 overlaps the run before it \(which ends at 4\)/);
    await expect(engine.logits(ids, { embeddings: [{ index: 1, tokens: 1, data: new Float32Array(H).fill(NaN) }] })).rejects.toThrow(/value 0 is NaN, not finite/);
  });
});
