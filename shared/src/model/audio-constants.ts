/**
 * Constants of Uni-MoE's audio (BEATs) input shared by the converter (the unit's input length) and the
 * edge's filterbank. Pure values: the edge's preprocessing also runs on Workers.
 */

/** BEATsProcessor: 16 kHz, 128 Kaldi mel bins, 25 ms / 10 ms frames, normalised (x - mean) / (2 std). */
export const BEATS_FBANK = { sampleRate: 16000, melBins: 128, frameLength: 400, frameShift: 160, mean: 15.41663, std: 6.55582 } as const;
/** Uni-MoE cuts audio into 30 s chunks (480000 samples; the last one padded with its last sample). */
export const BEATS_CHUNK_SAMPLES = 480000;
/** Kaldi frames of one chunk with snip_edges: 1 + (480000 - 400) // 160. */
export const BEATS_CHUNK_FRAMES = 1 + Math.floor((BEATS_CHUNK_SAMPLES - BEATS_FBANK.frameLength) / BEATS_FBANK.frameShift);
/**
 * The audio unit's input rows per chunk: the 2998 filterbank frames, then one row whose first value is
 * the chunk's count of real (unpadded) samples, from which the unit builds the reference's padding mask.
 * One tensor keeps the encoder protocol (one input per unit, batched along N) unchanged.
 */
export const BEATS_INPUT_ROWS = BEATS_CHUNK_FRAMES + 1;
