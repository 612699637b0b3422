/**
 * The float64 tower references equal torch float64 (tests/fixtures/towers/expected.json, written by
 * make_tower_fixtures.py with torch ops) on tiny towers of a different geometry than make-tiny's:
 * 28 px / patch 7, 8 mel bins x 20 frames, 5 queries, encoder and decoder with different head counts,
 * mlp2x_gelu projectors on both paths.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpointFile } from '@unimoe/shared/checkpoint/open';
import { relativeError } from '../compare';
import { loadClipReference } from './clip64';
import { erf } from './math64';
import { loadWhisperReference } from './whisper64';

const FIXTURES = join(import.meta.dirname, '..', '..', 'fixtures', 'towers');

interface Expected {
  image: { shape: number[]; values: number[][] };
  audio: { shape: number[]; values: number[][] };
}

const expected = JSON.parse(readFileSync(join(FIXTURES, 'expected.json'), 'utf8')) as Expected;

async function input(name: string): Promise<Float32Array> {
  const file = await openCheckpointFile(join(FIXTURES, 'inputs.safetensors'));
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
