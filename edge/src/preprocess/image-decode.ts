/**
 * Encoded image -> 8-bit RGB, with the colour semantics of PIL's `Image.open(f).convert('RGB')`
 * (what the reference feeds to CLIPImageProcessor): alpha is dropped (not composited), palettes
 * are looked up ignoring transparency, low-bit greys are scaled to 0..255, 16-bit channels keep
 * their high byte except 16-bit grey, which PIL opens as mode "I" and clips to 0..255.
 * EXIF orientation is ignored, as PIL's open() ignores it.
 */
import { decode as decodePng, type DecodedPng } from 'fast-png';
import { GifReader } from 'omggif';
import { MediaError, asCorrupt } from './errors';
import { readImageHeader, type ImageFormat } from './image-header';
import type { MediaLimits } from './limits';
import { decodeJpegRgba, decodeWebpRgba, type RgbaImage } from './wasm-codecs';

export interface RgbImage {
  width: number;
  height: number;
  /** Row-major, 3 bytes per pixel. */
  data: Uint8Array;
}

export async function decodeImageToRgb(
  bytes: Uint8Array,
  name: string,
  limits: Pick<MediaLimits, 'maxImageBytes' | 'maxImagePixels'>,
): Promise<RgbImage> {
  if (bytes.length > limits.maxImageBytes) {
    throw new MediaError('too_large', `${name}: ${bytes.length} bytes exceeds the image limit of ${limits.maxImageBytes} bytes`);
  }
  const header = readImageHeader(bytes, name);
  const pixels = header.width * header.height;
  if (pixels > limits.maxImagePixels) {
    throw new MediaError(
      'too_large',
      `${name}: ${header.format.toUpperCase()} declares ${header.width}x${header.height} = ${pixels} pixels, over the limit of ${limits.maxImagePixels}`,
    );
  }
  const what = `${name}: ${header.format.toUpperCase()}`;
  if (header.format === 'jpeg' && !jpegHasEndAfterScan(bytes)) {
    // libjpeg pads a cut-off scan with grey and only warns; PIL refuses such files ("image file is truncated").
    throw new MediaError('corrupt', `${what} is truncated (no end-of-image marker after the last scan)`);
  }
  const rgb = await asCorrupt(what, () => decodeByFormat(header.format, bytes));
  if (rgb.width !== header.width || rgb.height !== header.height) {
    throw new MediaError('corrupt', `${what} decoded to ${rgb.width}x${rgb.height} but its header says ${header.width}x${header.height}`);
  }
  return rgb;
}

async function decodeByFormat(format: ImageFormat, bytes: Uint8Array): Promise<RgbImage> {
  switch (format) {
    case 'png':
      return pngToRgb(decodePng(bytes));
    case 'gif':
      return gifFirstFrameToRgb(bytes);
    case 'jpeg':
      return rgbaToRgb(await decodeJpegRgba(bytes));
    case 'webp':
      return rgbaToRgb(await decodeWebpRgba(bytes));
  }
}

/** Whether an EOI marker follows the last start-of-scan. Both are unambiguous in entropy-coded data (0xFF is stuffed). */
function jpegHasEndAfterScan(bytes: Uint8Array): boolean {
  let lastScan = -1;
  for (let i = 0; i + 1 < bytes.length; i++) {
    if (bytes[i] === 0xff && bytes[i + 1] === 0xda) lastScan = i;
  }
  if (lastScan < 0) return false;
  for (let i = lastScan + 2; i + 1 < bytes.length; i++) {
    if (bytes[i] === 0xff && bytes[i + 1] === 0xd9) return true;
  }
  return false;
}

function rgbaToRgb(image: RgbaImage | { width: number; height: number; data: Uint8Array }): RgbImage {
  const n = image.width * image.height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    out[3 * i] = image.data[4 * i]!;
    out[3 * i + 1] = image.data[4 * i + 1]!;
    out[3 * i + 2] = image.data[4 * i + 2]!;
  }
  return { width: image.width, height: image.height, data: out };
}

/** Sample `index` of a row of `depth`-bit samples packed MSB first (PNG's layout for depth < 8). */
function packedSample(data: ArrayLike<number>, rowStart: number, index: number, depth: number): number {
  const bit = index * depth;
  const byte = data[rowStart + (bit >> 3)]!;
  return (byte >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
}

function pngToRgb(png: DecodedPng): RgbImage {
  const { width, height, depth, channels, data, palette } = png;
  const out = new Uint8Array(width * height * 3);
  const rowStride = depth < 8 ? Math.ceil((width * channels * depth) / 8) : width * channels;
  const sampleAt = (y: number, x: number, c: number): number =>
    depth < 8 ? packedSample(data, y * rowStride, x * channels + c, depth) : data[y * rowStride + x * channels + c]!;

  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = 3 * (y * width + x);
      if (palette) {
        const entry = palette[sampleAt(y, x, 0)];
        out[o] = entry?.[0] ?? 0;
        out[o + 1] = entry?.[1] ?? 0;
        out[o + 2] = entry?.[2] ?? 0;
      } else if (channels <= 2) {
        const v = sampleAt(y, x, 0);
        // 16-bit grey is mode "I" in PIL and convert('RGB') clips it; lower depths are scaled.
        const grey = depth === 16 ? Math.min(v, 255) : depth === 8 ? v : Math.round((v * 255) / ((1 << depth) - 1));
        out[o] = out[o + 1] = out[o + 2] = grey;
      } else {
        for (let c = 0; c < 3; c++) {
          const v = sampleAt(y, x, c);
          out[o + c] = depth === 16 ? v >> 8 : v;
        }
      }
    }
  }
  return { width, height, data: out };
}

function gifFirstFrameToRgb(bytes: Uint8Array): RgbImage {
  const reader = new GifReader(bytes as unknown as Buffer);
  if (reader.numFrames() === 0) throw new MediaError('empty', 'GIF has no frames');
  const frame = reader.frameInfo(0);
  const { width, height } = reader;
  // PIL fills frame 0's canvas with the transparent index (else index 0) and then writes the raw
  // indices, so uncovered and transparent pixels show that palette entry; omggif skips
  // transparent pixels when blitting, so pre-filling the canvas with that colour is equivalent.
  const fillIndex = frame.transparent_index ?? 0;
  const rgba = new Uint8Array(width * height * 4);
  const p = frame.palette_offset;
  const fill = p === null ? [0, 0, 0] : [bytes[p + 3 * fillIndex] ?? 0, bytes[p + 3 * fillIndex + 1] ?? 0, bytes[p + 3 * fillIndex + 2] ?? 0];
  for (let i = 0; i < width * height; i++) rgba.set(fill, 4 * i);
  reader.decodeAndBlitFrameRGBA(0, rgba as unknown as number[]);
  return rgbaToRgb({ width, height, data: rgba });
}
