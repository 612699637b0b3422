/** Limits checked before any expensive decoding (decompression bombs, oversized uploads). */
export interface MediaLimits {
  /** Largest encoded image file, bytes. */
  maxImageBytes: number;
  /** Largest width*height an image header may declare. */
  maxImagePixels: number;
  /** Largest encoded audio file, bytes. */
  maxAudioBytes: number;
  /** Longest audio accepted, seconds (each 30 s is one Whisper chunk). */
  maxAudioSeconds: number;
  /** Largest encoded video file (or sum of frame files), bytes. */
  maxVideoBytes: number;
  /** Most frames a video may have (frames are counted by decoding, so this bounds the decoding work). */
  maxVideoFrames: number;
  /** Wall-clock limit for one ffmpeg/ffprobe run, milliseconds. */
  ffmpegTimeoutMs: number;
  /** CPU time one ffmpeg/ffprobe run may use (all its threads together), seconds (ulimit -t). */
  ffmpegCpuSeconds: number;
  /** Address space one ffmpeg/ffprobe run may map, bytes (ulimit -v). */
  ffmpegMemoryBytes: number;
}

export const DEFAULT_MEDIA_LIMITS: MediaLimits = {
  maxImageBytes: 20 * 1024 * 1024,
  // PIL's own bomb threshold is ~89 MP; 50 MP keeps the RGBA decode buffer under 200 MB.
  maxImagePixels: 50_000_000,
  maxAudioBytes: 100 * 1024 * 1024,
  maxAudioSeconds: 10 * 60,
  maxVideoBytes: 200 * 1024 * 1024,
  // 10 minutes at 30 fps.
  maxVideoFrames: 18_000,
  ffmpegTimeoutMs: 120_000,
  ffmpegCpuSeconds: 120,
  ffmpegMemoryBytes: 1024 * 1024 * 1024,
};

export function resolveLimits(overrides?: Partial<MediaLimits>): MediaLimits {
  return { ...DEFAULT_MEDIA_LIMITS, ...overrides };
}
