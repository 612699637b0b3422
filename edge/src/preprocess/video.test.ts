import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { fixture, fixtureJson } from './fixtures.test-util';
import { clipNormalise, preprocessImage } from './image';
import { preprocessVideoFile, preprocessVideoFrames, sampleFrameIndices } from './video';

const FRAME = 3 * 336 * 336;
const expected = fixtureJson<{ frames: number; picked: number[]; crop336Sha256: string[] }>('video_expected.json');
const hasFfmpeg = (() => {
  try {
    execFileSync('ffprobe', ['-version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('video frame sampling', () => {
  it("picks i * (frames // 8) like the reference", () => {
    expect(sampleFrameIndices(8)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(sampleFrameIndices(20)).toEqual([0, 2, 4, 6, 8, 10, 12, 14]);
    expect(sampleFrameIndices(100)).toEqual([0, 12, 24, 36, 48, 60, 72, 84]);
  });

  it('repeats the first frame when there are fewer than 8 (step 0, as in the reference)', () => {
    expect(sampleFrameIndices(5)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('preprocesses the picked frames of a frame list into [8, 3, 336, 336]', async () => {
    const names = ['rgb_64x48.png', 'gray_50x70.png', 'photo_800x600.jpg', 'anim_40x40.gif', 'lossy_120x90.webp',
      'alpha_60x60.webp', 'palette4bit_33x21.png', 'gray16_30x30.png', 'rgba_500x380.png', 'rgb_64x48.png',
      'gray_50x70.png', 'anim_40x40.gif', 'lossy_120x90.webp', 'alpha_60x60.webp', 'palette4bit_33x21.png', 'gray16_30x30.png'];
    const { data, shape } = await preprocessVideoFrames(names.map(fixture), 'clip');
    expect(shape).toEqual([8, 3, 336, 336]);
    // 16 frames -> step 2; each slot must be exactly that frame's image features (image path verified against PIL).
    for (const [slot, index] of sampleFrameIndices(16).entries()) {
      const single = await preprocessImage(fixture(names[index]!), names[index]!);
      expect(data.subarray(slot * FRAME, (slot + 1) * FRAME)).toEqual(single);
    }
  });
});

describe.skipIf(!hasFfmpeg)('video files through ffmpeg', () => {
  it('decodes a lossless 12-frame video and picks frames 0..7 with PIL-identical pixels', async () => {
    const { data, shape } = await preprocessVideoFile(fixture('frames12_32x24_ffv1.mkv'), 'frames.mkv');
    expect(shape).toEqual([8, 3, 336, 336]);
    expect(expected.picked).toEqual(sampleFrameIndices(expected.frames));
    for (let slot = 0; slot < 8; slot++) {
      // Independent check: hash of PIL's resized/cropped uint8 frame, normalised the HF way.
      const features = data.subarray(slot * FRAME, (slot + 1) * FRAME);
      const pixels = new Uint8Array(336 * 336 * 3);
      const wantHash = expected.crop336Sha256[slot]!;
      // Invert the normalisation to uint8 to compare with PIL's pixels by hash.
      for (let c = 0; c < 3; c++) {
        for (let i = 0; i < 336 * 336; i++) {
          const mean = [0.48145466, 0.4578275, 0.40821073][c]!;
          const std = [0.26862954, 0.26130258, 0.27577711][c]!;
          pixels[3 * i + c] = Math.round((features[c * 336 * 336 + i]! * std + mean) * 255);
        }
      }
      expect(createHash('sha256').update(pixels).digest('hex')).toBe(wantHash);
      expect(clipNormalise({ width: 336, height: 336, data: pixels })).toEqual(features);
    }
  });

  it('refuses a file that is no known container, and one ffmpeg cannot read', async () => {
    await expect(preprocessVideoFile(new TextEncoder().encode('not a video at all'), 'bad.mp4')).rejects.toThrow(/bad\.mp4: not an MP4\/MOV or WebM/);
    await expect(preprocessVideoFile(new TextEncoder().encode('\0\0\0\x18ftypisom but cut short'), 'cut.mp4')).rejects.toThrow(/cut\.mp4: ffprobe cannot decode it/);
  });
});
