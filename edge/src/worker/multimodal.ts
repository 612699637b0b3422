/**
 * Media in the Worker: decoding and preprocessing (MultimodalPipeline.prepare and layout) run here; the
 * engines run the encoders (the app hands a remote engine features, not embeddings), so this pipeline's
 * encoder backend is never called and says so if it were.
 */
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import type { EncoderBackend } from '../engine/encoder-backend';
import { servableModalities } from '../multimodal/features';
import { MultimodalPipeline } from '../multimodal/pipeline';

const encodersOnTheEngineTier: EncoderBackend = {
  encode: (unit) => Promise.reject(new Error(`${unit} runs on the engine tier; the Worker only prepares its inputs`)),
  close: async () => {},
};

/** The pipeline when the bundle has media modalities the edge can prepare; none for a text-only bundle. */
export function workerMultimodal(manifest: Manifest): MultimodalPipeline | undefined {
  return servableModalities(manifest).length > 0 ? new MultimodalPipeline(manifest, encodersOnTheEngineTier) : undefined;
}
