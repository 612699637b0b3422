/**
 * BEATs' filterbank against torchaudio (`compliance.kaldi.fbank`, Debian's python3-torchaudio) run by
 * tests/fixtures/media/fbank_reference.py on the same samples: the float64 computation, and the
 * float32 one the reference model runs, both within 1e-4 of ours (normalised units; torchaudio builds
 * its mel banks in float32 even for float64 input, which bounds the agreement near 5e-5).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Rng } from '@unimoe/shared/model/sampling';
import { preprocessAudio } from './audio';
import { beatsChunks, beatsFbank, fbankFrames } from './fbank';
import { fixture, MEDIA_FIXTURES } from './fixtures.test-util';
import { parseWav } from './wav';

const dir = mkdtempSync(join(tmpdir(), 'unimoe-fbank-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** torchaudio's fbank of `samples` (whole, or chunked as Uni-MoE does): [float64, float32] values. */
function torchaudio(samples: Float64Array, chunks: boolean): [Float64Array, Float32Array] {
  const input = join(dir, 'in.f64');
  const [out64, out32] = [join(dir, 'out.f64'), join(dir, 'out.f32')];
  writeFileSync(input, new Uint8Array(samples.buffer, samples.byteOffset, samples.byteLength));
  execFileSync('/usr/bin/python3', [join(MEDIA_FIXTURES, 'fbank_reference.py'), input, out64, out32, ...(chunks ? ['--chunks'] : [])], { stdio: ['ignore', 'ignore', 'inherit'] });
  const b64 = readFileSync(out64);
  const b32 = readFileSync(out32);
  return [new Float64Array(b64.buffer, b64.byteOffset, b64.length / 8).slice(), new Float32Array(b32.buffer, b32.byteOffset, b32.length / 4).slice()];
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** A chirp with harmonics and seeded noise, quiet and loud stretches: every mel band gets energy. */
function testSignal(seconds: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  const n = Math.round(seconds * 16000);
  return Float64Array.from({ length: n }, (_, i) => {
    const t = i / 16000;
    const level = 0.05 + 0.4 * (0.5 + 0.5 * Math.sin(2 * Math.PI * 0.7 * t));
    const chirp = Math.sin(2 * Math.PI * (100 * t + 600 * t * t)) + 0.3 * Math.sin(2 * Math.PI * (300 * t + 1800 * t * t));
    return level * (0.6 * chirp + 0.2 * (rng.nextFloat() * 2 - 1));
  });
}

describe('BEATs Kaldi filterbank vs torchaudio.compliance.kaldi.fbank', () => {
  it('a 3.3 s signal: [frames, 128] within 1e-4 of torchaudio float64 and float32', () => {
    const samples = testSignal(3.3, 7);
    const ours = beatsFbank(samples);
    expect(ours.length).toBe(fbankFrames(samples.length) * 128);
    expect(fbankFrames(samples.length)).toBe(1 + Math.floor((samples.length - 400) / 160));
    const [want64, want32] = torchaudio(samples, false);
    expect(maxAbsDiff(ours, want64)).toBeLessThan(1e-4);
    expect(maxAbsDiff(ours, want32)).toBeLessThan(1e-4);
  });

  it('digital silence and a near-silent tail hit the log floor as torchaudio does', () => {
    const samples = new Float64Array(8000);
    for (let i = 4000; i < 8000; i++) samples[i] = 1e-6 * Math.sin(i / 3);
    const [want64] = torchaudio(samples, false);
    expect(maxAbsDiff(beatsFbank(samples), want64)).toBeLessThan(1e-4);
  });

  it('31 s of audio: two 30 s chunks, the last padded with its last sample, each [2998, 128]', () => {
    const samples = testSignal(31, 8);
    const { data, chunks } = beatsChunks(samples);
    expect(chunks).toBe(2);
    const [want64, want32] = torchaudio(samples, true);
    expect(data.length).toBe(2 * 2998 * 128);
    expect(maxAbsDiff(data, want64)).toBeLessThan(1e-4);
    // torchaudio's own float32 run drifts from its float64 one where a band is nearly empty (float32
    // FFT rounding of the loud bins leaks into it; the constant padding after DC removal is all such
    // noise): there we are as close to float32 torch as torch float64 is, plus 1e-4.
    expect(maxAbsDiff(data, want32)).toBeLessThan(maxAbsDiff(want64, want32) + 1e-4);
  });

  it('a 16 kHz WAV end to end (decode + chunk + fbank) matches torchaudio on its PCM samples', async () => {
    const name = 'speech_16k_s16.wav';
    const { data, shape } = await preprocessAudio(fixture(name), name);
    expect(shape).toEqual([1, 2998, 128]);
    const pcm = parseWav(fixture(name), name);
    expect(pcm.sampleRate).toBe(16000); // no resampling: the samples torchaudio sees are the file's
    const [want64] = torchaudio(pcm.samples, true);
    expect(maxAbsDiff(data, want64)).toBeLessThan(1e-4);
  });
});
