/**
 * The float64 tower references equal torch float64 (tests/fixtures/towers/expected.json, written by
 * make_tower_fixtures.py with torch ops) on tiny towers of a different geometry than make-tiny's:
 * 28 px / patch 7, 8 mel bins x 20 frames, 5 queries, encoder and decoder with different head counts,
 * mlp2x_gelu projectors on both paths.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint, openCheckpointFile } from '@unimoe/shared/checkpoint/open';
import { relativeError } from '../compare';
import { openBeats, qformerConfig } from '@unimoe/shared/convert/towers/beats-config';
import { buildBeatsUnit } from '@unimoe/shared/convert/units/beats';
import { runUnit } from '@unimoe/shared/convert/testing/run-unit';
import { loadBeatsReference } from './beats64';
import { loadClipReference } from './clip64';
import { erf } from './math64';
import { loadWhisperReference } from './whisper64';

const FIXTURES = join(import.meta.dirname, '..', '..', 'fixtures', 'towers');

interface Expected {
  image: { shape: number[]; values: number[][] };
  audio: { shape: number[]; values: number[][] };
}

const expected = JSON.parse(readFileSync(join(FIXTURES, 'expected.json'), 'utf8')) as Expected;
/** make_beats_fixtures.py: BEATs output and the whole audio path, torch float64. */
const beatsExpected = JSON.parse(readFileSync(join(FIXTURES, 'beats_expected.json'), 'utf8')) as Expected & { frames: number; chunkSamples: number; beats: Expected['audio'] };
const BEATS_PT = join(FIXTURES, 'beats', 'BEATs_fixture.pt');
const BEATS_ALIGNER = join(FIXTURES, 'beats-aligner');

async function input(name: string, file_ = 'inputs.safetensors'): Promise<Float32Array> {
  const file = await openCheckpointFile(join(FIXTURES, file_));
  try {
    return await file.read(name);
  } finally {
    await file.close();
  }
}

describe('tower references vs torch float64', () => {
  it('CLIP tower (hidden_states[-2], CLS dropped) + mlp2x_gelu projector within 1e-12', async () => {
    const ref = await loadClipReference(join(FIXTURES, 'clip'), join(FIXTURES, 'llm'));
    const pixels = await input('pixel_values');
    const per = 3 * ref.imageSize * ref.imageSize;
    expect([expected.image.values.length, ref.tokens, ref.outHidden]).toEqual(expected.image.shape);
    expected.image.values.forEach((want, n) => {
      expect(relativeError(ref.encode(pixels.subarray(n * per, (n + 1) * per)), want)).toBeLessThan(1e-12);
    });
  });

  it('Whisper encoder + decoder aligner over query tokens + mlp2x_gelu projector within 1e-12', async () => {
    const ref = await loadWhisperReference(join(FIXTURES, 'whisper'), join(FIXTURES, 'llm'));
    const mel = await input('input_features');
    const per = ref.melBins * ref.frames;
    expect([expected.audio.values.length, ref.queries, ref.outHidden]).toEqual(expected.audio.shape);
    expected.audio.values.forEach((want, n) => {
      expect(relativeError(ref.encode(mel.subarray(n * per, (n + 1) * per)), want)).toBeLessThan(1e-12);
    });
  });

  it('BEATs (torch.save .pt, gated relative bias, deep norm, padding mask) + Q-Former + mlp2x_gelu projector within 1e-12', async () => {
    const ref = await loadBeatsReference(BEATS_PT, BEATS_ALIGNER, BEATS_ALIGNER, beatsExpected.frames, beatsExpected.chunkSamples);
    const packed = await input('fbank', 'beats_inputs.safetensors');
    const per = (ref.frames + 1) * ref.melBins;
    expect([beatsExpected.audio.values.length, ref.queries, ref.outHidden]).toEqual(beatsExpected.audio.shape);
    beatsExpected.audio.values.forEach((want, n) => {
      const x = packed.subarray(n * per, (n + 1) * per);
      expect(relativeError(ref.beats(x, x[ref.frames * ref.melBins]!), beatsExpected.beats.values[n]!)).toBeLessThan(1e-12);
      expect(relativeError(ref.encode(x), want)).toBeLessThan(1e-12);
    });
    // The first item is mostly padding: masking matters (its output differs from the unmasked one).
    const first = packed.slice(0, per);
    expect(relativeError(ref.beats(first, beatsExpected.chunkSamples), beatsExpected.beats.values[0]!)).toBeGreaterThan(1e-2);
  });

  it("the converter's BEATs + Q-Former graph on the torch-written .pt matches torch float64 within 1e-4", async () => {
    const { tower, weights } = await openBeats(join(FIXTURES, 'beats'));
    const aligner = await openCheckpoint(BEATS_ALIGNER);
    try {
      const config = JSON.parse(readFileSync(join(BEATS_ALIGNER, 'config.json'), 'utf8')) as Record<string, unknown>;
      const qformer = qformerConfig(aligner, config, 'aligner', 'config.json');
      expect(qformer).toMatchObject({ hidden: 12, encoderHidden: 16, layers: 3, crossLayers: [0, 2], heads: 3, queries: 5 });
      const read = (name: string) => (name.startsWith('model.') ? aligner : weights).read(name);
      const unit = await buildBeatsUnit({ tower, qformer, frames: beatsExpected.frames, chunkSamples: beatsExpected.chunkSamples, llmHidden: 24 }, read, 'float32', 'audio.encoder');
      const fbank = await input('fbank', 'beats_inputs.safetensors');
      const out = await runUnit(unit, { fbank: { data: fbank, dims: [2, beatsExpected.frames + 1, 128] } });
      expect(out.embeddings.dims).toEqual(beatsExpected.audio.shape);
      expect(relativeError(out.embeddings.data, beatsExpected.audio.values.flat())).toBeLessThan(1e-4);
    } finally {
      await Promise.all([weights.close(), aligner.close()]);
    }
  });

  it('erf matches known values to double precision', () => {
    // Values from C99 erf (Python math.erf); a few ulps of slack for the series.
    expect(erf(0)).toBe(0);
    expect(erf(0.5)).toBeCloseTo(0.5204998778130465, 14);
    expect(erf(1)).toBeCloseTo(0.8427007929497149, 14);
    expect(erf(-2)).toBeCloseTo(-0.9953222650189527, 14);
    expect(erf(3.5)).toBeCloseTo(0.9999992569016276, 14);
    expect(erf(7)).toBe(1);
  });
});
