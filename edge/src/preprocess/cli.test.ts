import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { preprocessAudio } from './audio';
import { run } from './cli';
import { MEDIA_FIXTURES, fixtureJson } from './fixtures.test-util';

const dir = mkdtempSync(join(tmpdir(), 'preprocess-cli-'));

function captureConsole() {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((s: string) => void out.push(s));
  vi.spyOn(console, 'error').mockImplementation((s: string) => void err.push(s));
  return { out, err };
}

afterEach(() => vi.restoreAllMocks());

describe('unimoe preprocess', () => {
  it('writes little-endian float32 image features and prints the shape last', async () => {
    const io = captureConsole();
    const outFile = join(dir, 'image.f32');
    expect(await run(['image', MEDIA_FIXTURES + 'rgb_64x48.png', '--out', outFile])).toBe(0);
    expect(JSON.parse(io.out.at(-1)!)).toEqual({ shape: [3, 336, 336] });
    const bytes = readFileSync(outFile);
    expect(bytes.length).toBe(3 * 336 * 336 * 4);
    const want = fixtureJson<{ normalisedSampleIndex: number[]; images: Record<string, { normalisedSampleValue: number[] }> }>('images_expected.json');
    want.normalisedSampleIndex.forEach((index, k) => {
      expect(bytes.readFloatLE(4 * index)).toBe(want.images['rgb_64x48.png']!.normalisedSampleValue[k]);
    });
  });

  it('writes speech (Whisper log-mel) features with their chunk count', async () => {
    const io = captureConsole();
    const outFile = join(dir, 'speech.f32');
    expect(await run(['speech', MEDIA_FIXTURES + 'speech_16k_s16.wav', '--out', outFile])).toBe(0);
    expect(JSON.parse(io.out.at(-1)!)).toEqual({ shape: [1, 80, 3000] });
    expect(readFileSync(outFile).length).toBe(80 * 3000 * 4);
  });

  it('writes audio (BEATs fbank) features: one [2998, 128] block per started 30 s', async () => {
    const io = captureConsole();
    const outFile = join(dir, 'fbank.f32');
    expect(await run(['fbank', MEDIA_FIXTURES + 'speech_16k_s16.wav', '--out', outFile])).toBe(0);
    expect(JSON.parse(io.out.at(-1)!)).toEqual({ shape: [1, 2998, 128] });
    const bytes = readFileSync(outFile);
    expect(bytes.length).toBe(2998 * 128 * 4);
    const want = await preprocessAudio(new Uint8Array(readFileSync(MEDIA_FIXTURES + 'speech_16k_s16.wav')));
    expect([bytes.readFloatLE(0), bytes.readFloatLE(4 * (1000 * 128 + 17))]).toEqual([want.data[0], want.data[1000 * 128 + 17]]);
  });

  it('refuses the ambiguous kind "audio", naming the two it could mean', async () => {
    const io = captureConsole();
    expect(await run(['audio', MEDIA_FIXTURES + 'speech_16k_s16.wav', '--out', join(dir, 'x.f32')])).toBe(2);
    expect(io.err.join('\n')).toMatch(/"audio" is ambiguous: use "speech" \(Whisper log-mel\) or "fbank"/);
  });

  it('exits 1 with the file and the problem named for bad media', async () => {
    const io = captureConsole();
    expect(await run(['image', MEDIA_FIXTURES + 'speech_16k_s16.wav', '--out', join(dir, 'x.f32')])).toBe(1);
    expect(io.err.join('\n')).toMatch(/speech_16k_s16\.wav: not a PNG, JPEG, GIF or WebP image/);
    expect(await run(['fbank', join(dir, 'missing.wav'), '--out', join(dir, 'x.f32')])).toBe(1);
    expect(io.err.join('\n')).toMatch(/missing\.wav/);
  });

  it('exits 2 with usage for bad arguments', async () => {
    const io = captureConsole();
    expect(await run(['image', MEDIA_FIXTURES + 'rgb_64x48.png'])).toBe(2);
    expect(await run(['sound', 'x.wav', '--out', 'y'])).toBe(2);
    expect(io.err.join('\n')).toMatch(/--out FILE is required[\s\S]*unknown media kind "sound"/);
  });
});
