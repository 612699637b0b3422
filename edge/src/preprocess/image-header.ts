import { MediaError } from './errors';

export type ImageFormat = 'png' | 'jpeg' | 'gif' | 'webp';

export interface ImageHeader {
  format: ImageFormat;
  width: number;
  height: number;
}

function startsWith(bytes: Uint8Array, prefix: readonly number[], at = 0): boolean {
  if (bytes.length < at + prefix.length) return false;
  return prefix.every((b, i) => bytes[at + i] === b);
}

const ascii = (s: string): number[] => [...s].map((c) => c.charCodeAt(0));
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** The image format from the magic bytes, or null when it is none of the supported four. */
export function sniffImageFormat(bytes: Uint8Array): ImageFormat | null {
  if (startsWith(bytes, PNG_SIGNATURE)) return 'png';
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(bytes, ascii('GIF87a')) || startsWith(bytes, ascii('GIF89a'))) return 'gif';
  if (startsWith(bytes, ascii('RIFF')) && startsWith(bytes, ascii('WEBP'), 8)) return 'webp';
  return null;
}

/**
 * Reads the declared dimensions from the header alone, so that a decompression bomb is refused
 * before any pixel buffer is allocated.
 */
export function readImageHeader(bytes: Uint8Array, name: string): ImageHeader {
  const format = sniffImageFormat(bytes);
  if (format === null) {
    throw new MediaError('unsupported', `${name}: not a PNG, JPEG, GIF or WebP image (unrecognised signature)`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const truncated = (): never => {
    throw new MediaError('corrupt', `${name}: ${format.toUpperCase()} header is truncated`);
  };
  const dims = ((): [number, number] => {
    switch (format) {
      case 'png':
        if (bytes.length < 24 || !startsWith(bytes, ascii('IHDR'), 12)) truncated();
        return [view.getUint32(16), view.getUint32(20)];
      case 'gif':
        if (bytes.length < 10) truncated();
        return [view.getUint16(6, true), view.getUint16(8, true)];
      case 'webp':
        return readWebpDims(bytes, view, name, truncated);
      case 'jpeg':
        return readJpegDims(bytes, view, name, truncated);
    }
  })();
  const [width, height] = dims;
  if (width === 0 || height === 0) {
    throw new MediaError('empty', `${name}: ${format.toUpperCase()} header declares a ${width}x${height} image`);
  }
  return { format, width, height };
}

function readWebpDims(bytes: Uint8Array, view: DataView, name: string, truncated: () => never): [number, number] {
  if (bytes.length < 30) truncated();
  const u24 = (at: number) => bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16);
  if (startsWith(bytes, ascii('VP8X'), 12)) return [u24(24) + 1, u24(27) + 1];
  if (startsWith(bytes, ascii('VP8L'), 12)) {
    // 14-bit width-1 and height-1 packed little-endian after the 0x2f signature byte.
    const bits = view.getUint32(21, true);
    return [(bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1];
  }
  if (startsWith(bytes, ascii('VP8 '), 12)) {
    if (!startsWith(bytes, [0x9d, 0x01, 0x2a], 23)) truncated();
    return [view.getUint16(26, true) & 0x3fff, view.getUint16(28, true) & 0x3fff];
  }
  throw new MediaError('unsupported', 'WebP: unknown first chunk (expected VP8, VP8L or VP8X)');
}

function readJpegDims(bytes: Uint8Array, view: DataView, name: string, truncated: () => never): [number, number] {
  let p = 2;
  while (p + 4 <= bytes.length) {
    if (bytes[p] !== 0xff) throw new MediaError('corrupt', `${name}: JPEG expected a marker at byte ${p}`);
    const marker = bytes[p + 1]!;
    if (marker === 0xff) {
      p += 1; // fill byte
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd9)) {
      p += 2; // markers without a length
      continue;
    }
    const length = view.getUint16(p + 2);
    const isStartOfFrame = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isStartOfFrame) {
      if (p + 9 > bytes.length) truncated();
      return [view.getUint16(p + 7), view.getUint16(p + 5)];
    }
    p += 2 + length;
  }
  return truncated();
}
