/**
 * Media in the Worker: decoding and preprocessing (MultimodalPipeline.prepare and layout) run here; the
 * engines run the encoders (the app hands a remote engine features, not embeddings), so this pipeline's
 * encoder backend is never called and says so if it were.
 */
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import type { EncoderBackend } from '../engine/encoder-backend';
import { servableModalities } from '../multimodal/features';
import { MultimodalPipeline } from '../multimodal/pipeline';
import type { MediaLimits } from '../preprocess/limits';

/**
 * A Worker isolate has 128 MB. The Node edge's decode limits would let one image (50 MP: 200 MB of RGBA)
 * or a 100 MB WAV (float64 samples: 400 MB) exceed it, so the Worker decodes less: 8 MP images (32 MB of
 * RGBA) and WAV files up to 8 MB (at most 32 MB of samples) and 2 minutes. Larger media get the same 413
 * the Node edge gives over its own limits.
 */
export const WORKER_MEDIA_LIMITS: Partial<MediaLimits> = {
  maxImagePixels: 8_000_000,
  maxAudioBytes: 8 * 1024 * 1024,
  maxAudioSeconds: 120,
};

const encodersOnTheEngineTier: EncoderBackend = {
  encode: (unit) => Promise.reject(new Error(`${unit} runs on the engine tier; the Worker only prepares its inputs`)),
  close: async () => {},
};

/** The pipeline when the bundle has media modalities the edge can prepare; none for a text-only bundle. */
export function workerMultimodal(manifest: Manifest): MultimodalPipeline | undefined {
  return servableModalities(manifest).length > 0 ? new MultimodalPipeline(manifest, encodersOnTheEngineTier, WORKER_MEDIA_LIMITS) : undefined;
}
