/**
 * CLIP image preprocessing as HF `CLIPImageProcessor` does it for openai/clip-vit-large-patch14-336:
 * convert('RGB') -> resize shortest side to 336 (PIL bicubic) -> centre crop 336 -> x/255 ->
 * (x - mean) / std, channels first. Float steps are done in float32 in HF's order so the output
 * matches the reference to the last bit, not just to a tolerance.
 */
import { decodeImageToRgb, type RgbImage } from './image-decode';
import { resolveLimits, type MediaLimits } from './limits';
import { resizeBicubicLikePil } from './pil-resize';

export const CLIP_IMAGE_SIZE = 336;
export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;
const RESCALE_FACTOR = 0.00392156862745098; // HF's rescale_factor (1/255 as stored in the config)

/** Output size of HF's get_resize_output_image_size(shortest_edge=size, default_to_square=False). */
export function shortestEdgeResizeSize(width: number, height: number, size: number): { width: number; height: number } {
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const newLong = Math.trunc((size * long) / short);
  return width <= height ? { width: size, height: newLong } : { width: newLong, height: size };
}

/** HF's center_crop: the offset rounds down, so an odd surplus leaves the extra pixel at the bottom/right. */
export function centreCrop(image: RgbImage, size: number): RgbImage {
  const top = Math.floor((image.height - size) / 2);
  const left = Math.floor((image.width - size) / 2);
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const from = ((y + top) * image.width + left) * 3;
    out.set(image.data.subarray(from, from + size * 3), y * size * 3);
  }
  return { width: size, height: size, data: out };
}

/** The resized and cropped uint8 RGB image, before normalisation (exposed for exactness tests). */
export function clipResizeAndCrop(image: RgbImage, size = CLIP_IMAGE_SIZE): RgbImage {
  const target = shortestEdgeResizeSize(image.width, image.height, size);
  return centreCrop(resizeBicubicLikePil(image, target.width, target.height), size);
}

/** uint8 HWC RGB -> normalised float32 CHW. */
export function clipNormalise(image: RgbImage, out = new Float32Array(3 * image.width * image.height)): Float32Array {
  const plane = image.width * image.height;
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    const mean = f(CLIP_MEAN[c]!);
    const std = f(CLIP_STD[c]!);
    for (let i = 0; i < plane; i++) {
      const scaled = f(image.data[3 * i + c]! * RESCALE_FACTOR);
      out[c * plane + i] = f(scaled - mean) / std;
    }
  }
  return out;
}

export interface ImageOptions {
  /** LLaVA's `image_aspect_ratio: pad`: `padToSquare` before the CLIP resize. */
  padToSquare?: boolean;
}

/** Encoded PNG/JPEG/GIF/WebP bytes -> Float32Array [3, 336, 336]. Throws MediaError on bad input. */
export async function preprocessImage(bytes: Uint8Array, name = 'image', limits?: Partial<MediaLimits>, opts: ImageOptions = {}): Promise<Float32Array> {
  const rgb = await decodeImageToRgb(bytes, name, resolveLimits(limits));
  return clipNormalise(clipResizeAndCrop(opts.padToSquare ? padToSquare(rgb) : rgb));
}

/**
 * LLaVA's `expand2square` (`image_aspect_ratio: pad`): the image centred on a square canvas filled with
 * the mean colour `int(mean * 255)`; the offset `(long - short) // 2` as PIL's paste receives it.
 */
export function padToSquare(image: RgbImage, mean: readonly number[] = CLIP_MEAN): RgbImage {
  const { width, height } = image;
  if (width === height) return image;
  const size = Math.max(width, height);
  const fill = mean.map((m) => Math.trunc(m * 255));
  const out = new Uint8Array(size * size * 3);
  for (let i = 0; i < size * size; i++) out.set(fill, i * 3);
  const left = width < size ? Math.floor((size - width) / 2) : 0;
  const top = height < size ? Math.floor((size - height) / 2) : 0;
  for (let y = 0; y < height; y++) out.set(image.data.subarray(y * width * 3, (y + 1) * width * 3), ((top + y) * size + left) * 3);
  return { width: size, height: size, data: out };
}
