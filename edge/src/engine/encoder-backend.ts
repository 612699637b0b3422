/**
 * Where modality encoders run (`vision.encoder`, `audio.encoder` units: see shared/src/bundle/manifest.ts).
 * Embedded mode runs them in-process; split mode sends them to the pool hosting them over NATS, so one
 * request's modalities encode concurrently on different machines.
 */
export interface EncodedTensor {
  data: Float32Array;
  dims: number[];
}

export interface EncoderBackend {
  /** Runs one encoder unit on a batch (e.g. [N,3,336,336] pixels or [N,80,3000] log-mel) -> [N, tokens, hidden]. */
  encode(unit: string, input: EncodedTensor): Promise<EncodedTensor>;
  close(): Promise<void>;
}
