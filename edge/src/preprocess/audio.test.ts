import { describe, expect, it } from 'vitest';
import { preprocessSpeech } from './audio';
import { fixture, fixtureFloat32, fixtureJson } from './fixtures.test-util';
import { CHUNK_FRAMES, N_MELS, whisperLogMel } from './logmel';
import { PowerSpectrum } from './rfft';

interface LogMelCase {
  file: string;
  sampleRate: number;
  chunks: number;
  keptFramesHead: number;
  keptFramesTail: number;
  /** Per chunk: from this frame on, every frame equals the last one (silent padding). */
  constantFrom: number[];
  maxAbsDiffToWhisperLoadAudio?: number;
}
const cases = fixtureJson<Record<string, LogMelCase>>('audio_expected.json');

/** Largest |actual - expected| over the committed frames and over the padding run they imply. */
function compareLogMel(actual: Float32Array, want: LogMelCase): number {
  const expected = fixtureFloat32(want.file);
  const kept = want.keptFramesHead + want.keptFramesTail;
  let worst = 0;
  for (let c = 0; c < want.chunks; c++) {
    for (let m = 0; m < N_MELS; m++) {
      const row = (c * N_MELS + m) * CHUNK_FRAMES;
      const wantRow = (c * N_MELS + m) * kept;
      for (let t = 0; t < kept; t++) {
        const frame = t < want.keptFramesHead ? t : CHUNK_FRAMES - kept + t;
        worst = Math.max(worst, Math.abs(actual[row + frame]! - expected[wantRow + t]!));
      }
      const padding = expected[wantRow + kept - 1]!;
      for (let t = want.constantFrom[c]!; t < CHUNK_FRAMES; t++) {
        worst = Math.max(worst, Math.abs(actual[row + t]! - padding));
      }
    }
  }
  return worst;
}

describe('Whisper log-mel matches a numpy implementation of WhisperFeatureExtractor', () => {
  // 16 kHz inputs: no resampling, so this is the feature extractor alone.
  for (const name of ['speech_16k_s16.wav', 'speech_16k_u8.wav', 'speech_16k_f64.wav']) {
    it(`${name}: within 1e-4 of numpy`, async () => {
      const { data, shape } = await preprocessSpeech(fixture(name), name);
      expect(shape).toEqual([1, 80, 3000]);
      expect(compareLogMel(data, cases[name]!)).toBeLessThan(1e-4);
    });
  }

  // Resampled inputs: numpy runs the same swresample-style filter, so the same 1e-4 holds. The
  // reference's own loader (whisper.load_audio: ffmpeg + 16-bit output) is further away by its
  // int16 quantisation; that gap was measured when the fixtures were made and is pinned here.
  for (const name of ['speech_8k_f32.wav', 'speech_44k1_s24_stereo.wav']) {
    it(`${name}: resampled to 16 kHz, within 1e-4 of numpy and 0.02 of whisper.load_audio`, async () => {
      const want = cases[name]!;
      const { data } = await preprocessSpeech(fixture(name), name);
      expect(compareLogMel(data, want)).toBeLessThan(1e-4);
      expect(want.maxAbsDiffToWhisperLoadAudio).toBeLessThan(0.02);
    });
  }

  it('splits 35 s into two 30 s chunks, each normalised on its own maximum', () => {
    const n = 35 * 16000;
    const samples = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const t = i / 16000;
      samples[i] = Math.fround(Math.sin(2 * Math.PI * 440 * t) * (0.3 + 0.2 * Math.sin(2 * Math.PI * 0.5 * t)));
    }
    const { data, chunks } = whisperLogMel(samples);
    expect(chunks).toBe(2);
    expect(compareLogMel(data, cases['synthetic_35s']!)).toBeLessThan(1e-4);
  });
});

describe('PowerSpectrum (Bluestein over fft.js)', () => {
  it.each([400, 7, 64])('equals a direct float64 DFT for n = %i', (n) => {
    const x = Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) + 0.5 * Math.cos(i * i * 0.011) - 0.1);
    const spectrum = new PowerSpectrum(n);
    const got = new Float64Array(spectrum.bins);
    spectrum.compute(x, got);
    for (let k = 0; k < spectrum.bins; k++) {
      let re = 0;
      let im = 0;
      for (let j = 0; j < n; j++) {
        re += x[j]! * Math.cos((2 * Math.PI * j * k) / n);
        im -= x[j]! * Math.sin((2 * Math.PI * j * k) / n);
      }
      const power = re * re + im * im;
      expect(Math.abs(got[k]! - power)).toBeLessThan(1e-9 * Math.max(1, power));
    }
  });
});
