import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { fixture, fixtureJson } from './fixtures.test-util';
import { decodeImageToRgb } from './image-decode';
import { clipResizeAndCrop, preprocessImage, shortestEdgeResizeSize } from './image';
import { DEFAULT_MEDIA_LIMITS } from './limits';

interface ExpectedImage {
  width: number;
  height: number;
  decodedSha256: string;
  crop336Sha256: string;
  crop24Base64: string;
  normalisedSampleValue: number[];
}
const expected = fixtureJson<{ normalisedSampleIndex: number[]; images: Record<string, ExpectedImage> }>('images_expected.json');
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

function firstMismatch(actual: Uint8Array, wanted: Uint8Array): string {
  const i = actual.findIndex((v, k) => v !== wanted[k]);
  return i < 0 ? 'none' : `byte ${i} (pixel ${Math.floor(i / 3)}, channel ${i % 3}): ${actual[i]} vs PIL ${wanted[i]}`;
}

describe('CLIP image preprocessing matches PIL + HF CLIPImageProcessor', () => {
  for (const [name, want] of Object.entries(expected.images)) {
    describe(name, () => {
      it("decodes to exactly PIL's convert('RGB') pixels", async () => {
        const rgb = await decodeImageToRgb(fixture(name), name, DEFAULT_MEDIA_LIMITS);
        expect([rgb.width, rgb.height]).toEqual([want.width, want.height]);
        expect(sha256(rgb.data)).toBe(want.decodedSha256);
      });

      it('resizes (PIL bicubic) and centre-crops to identical uint8 pixels', async () => {
        const rgb = await decodeImageToRgb(fixture(name), name, DEFAULT_MEDIA_LIMITS);
        const small = clipResizeAndCrop(rgb, 24).data;
        const wantSmall = new Uint8Array(Buffer.from(want.crop24Base64, 'base64'));
        expect(firstMismatch(small, wantSmall)).toBe('none');
        expect(sha256(clipResizeAndCrop(rgb).data)).toBe(want.crop336Sha256);
      });

      it('normalises to the float32 values HF produces', async () => {
        const features = await preprocessImage(fixture(name), name);
        expect(features.length).toBe(3 * 336 * 336);
        // Same float32 operations in the same order as HF: exact, so the bound is 0.
        let worst = 0;
        expected.normalisedSampleIndex.forEach((index, k) => {
          worst = Math.max(worst, Math.abs(features[index]! - want.normalisedSampleValue[k]!));
        });
        expect(worst).toBe(0);
      });
    });
  }

  it("computes HF's shortest-edge output size (long side truncated)", () => {
    expect(shortestEdgeResizeSize(640, 480, 336)).toEqual({ width: 448, height: 336 });
    expect(shortestEdgeResizeSize(50, 70, 336)).toEqual({ width: 336, height: 470 }); // 470.4 -> 470
    expect(shortestEdgeResizeSize(336, 336, 336)).toEqual({ width: 336, height: 336 });
  });
});
