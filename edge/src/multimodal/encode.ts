/**
 * Runs the encoders for one request: one encoder call per modality present (all images as one batch,
 * all video frames as one batch, all speech chunks, all audio chunks), the modalities concurrently, so split
 * mode can encode them on different machines at once. Nothing is encoded for a modality the request
 * lacks. Video: the frames' outputs are averaged per video (no temporal encoding, as the reference);
 * speech and audio: each item's 30 s chunks give `tokens` each, concatenated in time order.
 */
import type { Preprocessing } from '@unimoe/shared/bundle/manifest';
import type { EncoderBackend } from '../engine/encoder-backend';
import type { MediaFeatures, MediaModality } from './features';

export interface EncoderShapes {
  hidden: number;
  /** Tokens one image / video / speech chunk / audio chunk yields (manifest `modalityTokens`). */
  tokens: Partial<Record<MediaModality, number>>;
  units: Partial<Record<MediaModality, string>>;
}

export function encoderShapes(pre: Preprocessing, tokens: Partial<Record<MediaModality, number>>, hidden: number): EncoderShapes {
  return { hidden, tokens, units: { image: pre.image?.unit, video: pre.video?.unit, speech: pre.speech?.unit, audio: pre.audio?.unit } };
}

/** Returns one [tokens, hidden] block per item, in item order. */
export async function encodeMedia(encoders: EncoderBackend, shapes: EncoderShapes, items: readonly MediaFeatures[]): Promise<Float32Array[]> {
  const out: Float32Array[] = new Array(items.length);
  const groups = new Map<MediaModality, number[]>();
  items.forEach((f, i) => groups.set(f.modality, [...(groups.get(f.modality) ?? []), i]));
  await Promise.all(
    [...groups].map(async ([modality, indices]) => {
      const unit = shapes.units[modality];
      const T = shapes.tokens[modality];
      if (!unit || !T) throw new Error(`the bundle has no encoder for ${modality}`);
      const batch = concatBatch(indices.map((i) => items[i]!));
      const res = await encoders.encode(unit, batch);
      const N = batch.dims[0]!;
      const H = shapes.hidden;
      if (res.dims.join(',') !== [N, T, H].join(',') || res.data.length !== N * T * H) {
        throw new Error(`encoder ${unit} returned [${res.dims.join(', ')}] for ${N} inputs; expected [${N}, ${T}, ${H}]`);
      }
      let row = 0;
      for (const i of indices) {
        const n = items[i]!.dims[0]!;
        const block = res.data.subarray(row * T * H, (row + n) * T * H);
        out[i] = modality === 'video' ? average(block, n, T * H) : block.slice();
        row += n;
      }
    }),
  );
  return out;
}

/** Items of one modality stacked along the batch axis (their other axes are equal by construction). */
function concatBatch(items: readonly MediaFeatures[]): { data: Float32Array; dims: number[] } {
  if (items.length === 1) return { data: items[0]!.data, dims: items[0]!.dims };
  const data = new Float32Array(items.reduce((s, f) => s + f.data.length, 0));
  let at = 0;
  for (const f of items) {
    data.set(f.data, at);
    at += f.data.length;
  }
  return { data, dims: [items.reduce((s, f) => s + f.dims[0]!, 0), ...items[0]!.dims.slice(1)] };
}

/** Mean over `n` blocks of `size` values, accumulated in float64. */
function average(blocks: Float32Array, n: number, size: number): Float32Array {
  const out = new Float32Array(size);
  for (let j = 0; j < size; j++) {
    let s = 0;
    for (let k = 0; k < n; k++) s += blocks[k * size + j]!;
    out[j] = s / n;
  }
  return out;
}
