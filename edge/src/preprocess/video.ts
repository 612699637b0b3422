/**
 * Video -> 8 CLIP-preprocessed frames, Float32Array [8, 3, 336, 336]. Frames are picked as the
 * reference does, `i * (frames // 8)` for i = 0..7. With fewer than 8 frames that step is 0, so
 * the reference (and we) feed the first frame 8 times; kept identical on purpose, since the
 * encoder averages the 8 results. Input is either a list of encoded frames (pure TS) or an
 * MP4/WebM/... file decoded by ffmpeg (Node only).
 */
import { MediaError } from './errors';
import { CLIP_IMAGE_SIZE, preprocessImage, type ImageOptions } from './image';
import { resolveLimits, type MediaLimits } from './limits';

export const VIDEO_FRAMES = 8;
const FRAME_FLOATS = 3 * CLIP_IMAGE_SIZE * CLIP_IMAGE_SIZE;

export interface VideoFeatures {
  data: Float32Array;
  shape: [number, number, number, number];
}

export function sampleFrameIndices(frameCount: number): number[] {
  const step = Math.floor(frameCount / VIDEO_FRAMES);
  return Array.from({ length: VIDEO_FRAMES }, (_, i) => i * step);
}

async function preprocessPicked(frames: Uint8Array[], names: string[], limits: MediaLimits, opts: ImageOptions): Promise<VideoFeatures> {
  const data = new Float32Array(VIDEO_FRAMES * FRAME_FLOATS);
  // Repeated frames (short videos) are the same buffer and are preprocessed once.
  const done = new Map<Uint8Array, Float32Array>();
  for (let i = 0; i < VIDEO_FRAMES; i++) {
    const frame = frames[i]!;
    let pixels = done.get(frame);
    if (pixels === undefined) {
      pixels = await preprocessImage(frame, names[i]!, limits, opts);
      done.set(frame, pixels);
    }
    data.set(pixels, i * FRAME_FLOATS);
  }
  return { data, shape: [VIDEO_FRAMES, 3, CLIP_IMAGE_SIZE, CLIP_IMAGE_SIZE] };
}

/** Encoded frames in order (PNG/JPEG/GIF/WebP each). `opts.padToSquare`: LLaVA pads video frames as it pads images. */
export async function preprocessVideoFrames(frames: Uint8Array[], name = 'video', limits?: Partial<MediaLimits>, opts: ImageOptions = {}): Promise<VideoFeatures> {
  const resolved = resolveLimits(limits);
  if (frames.length === 0) throw new MediaError('empty', `${name}: no frames given`);
  const total = frames.reduce((sum, f) => sum + f.length, 0);
  if (total > resolved.maxVideoBytes) {
    throw new MediaError('too_large', `${name}: ${total} bytes of frames exceeds the video limit of ${resolved.maxVideoBytes} bytes`);
  }
  const picked = sampleFrameIndices(frames.length);
  return preprocessPicked(
    picked.map((i) => frames[i]!),
    picked.map((i) => `${name} frame ${i}`),
    resolved,
    opts,
  );
}

/** An encoded video file, decoded with ffmpeg (Node only; a clear MediaError where ffmpeg is missing). */
export async function preprocessVideoFile(bytes: Uint8Array, name = 'video', limits?: Partial<MediaLimits>, opts: ImageOptions = {}): Promise<VideoFeatures> {
  const resolved = resolveLimits(limits);
  if (bytes.length === 0) throw new MediaError('empty', `${name}: video file is empty`);
  if (bytes.length > resolved.maxVideoBytes) {
    throw new MediaError('too_large', `${name}: ${bytes.length} bytes exceeds the video limit of ${resolved.maxVideoBytes} bytes`);
  }
  const { extractVideoFramesWithFfmpeg } = await import('./ffmpeg');
  let picked: number[] = [];
  const frames = await extractVideoFramesWithFfmpeg(bytes, name, resolved, (count) => (picked = sampleFrameIndices(count)));
  // Frames extracted by ffmpeg are trusted PNGs sized like the video; only the pixel limit applies.
  return preprocessPicked(frames, picked.map((i) => `${name} frame ${i}`), { ...resolved, maxImageBytes: Infinity }, opts);
}
