/**
 * Float64 reference of Uni-MoE's whole multimodal forward: the tower references (CLIP + mm_projector,
 * Whisper encoder + aligner for speech, BEATs + Q-Former for audio) turn preprocessed media into
 * modality tokens, which replace the prompt's
 * placeholders in order, and the text reference runs the spliced sequence. Independent of the
 * converter and the engine: plain float64 loops over the checkpoint's own tensors.
 */
import type { ReferenceInput, ReferenceModel } from './reference-model';
import { loadReferenceModel } from './reference-model';
import { loadBeatsReference, type BeatsReference } from './towers/beats64';
import { loadClipReference, type ClipReference } from './towers/clip64';
import { loadWhisperReference, type WhisperReference } from './towers/whisper64';

export type ReferenceModality = 'image' | 'video' | 'speech' | 'audio';

/** Preprocessed media: image [3,S,S] (or [1,3,S,S]), video [frames,3,S,S], speech [chunks,mel,frames], audio [chunks,frames+1,128] (the unit's input: fbank, then the valid-sample row). */
export interface ReferenceMedia {
  modality: ReferenceModality;
  data: ArrayLike<number>;
  dims: number[];
}

export interface MultimodalPromptInput {
  /** Text ids and where each placeholder's tokens go (the template's `encodePrompt` output). */
  ids: number[];
  placeholders: { modality: 'image' | 'video' | 'audio'; index: number }[];
  /** One item per placeholder, in order. */
  media: ReferenceMedia[];
}

export interface MultimodalReference {
  text: ReferenceModel;
  /** One [tokens * hidden] block of modality tokens. */
  encode(media: ReferenceMedia): Float64Array;
  /** The prompt's positions: text ids with each placeholder replaced by its item's token embeddings. */
  inputs(prompt: MultimodalPromptInput): ReferenceInput[];
  forward(prompt: MultimodalPromptInput): Float64Array;
  greedy(prompt: MultimodalPromptInput, steps: number): number[];
}

/** The towers: CLIP directory, Whisper directory, and BEATs `.pt` with its Q-Former checkpoint directory. */
export interface ReferenceTowers {
  vision?: string;
  speech?: string;
  audio?: { beats: string; aligner: string; frames: number; chunkSamples: number };
}

export async function loadMultimodalReference(checkpointDir: string, towers: ReferenceTowers): Promise<MultimodalReference> {
  const text = await loadReferenceModel(checkpointDir);
  const clip: ClipReference | undefined = towers.vision ? await loadClipReference(towers.vision, checkpointDir) : undefined;
  const whisper: WhisperReference | undefined = towers.speech ? await loadWhisperReference(towers.speech, checkpointDir) : undefined;
  const beats: BeatsReference | undefined = towers.audio ? await loadBeatsReference(towers.audio.beats, towers.audio.aligner, checkpointDir, towers.audio.frames, towers.audio.chunkSamples) : undefined;
  const H = text.config.hidden;

  const slice = (data: ArrayLike<number>, from: number, size: number) => Float64Array.from({ length: size }, (_, i) => data[from + i]!);

  /** Each 30 s window gives its own query tokens; a long input is their concatenation in time order. */
  const chunked = (m: ReferenceMedia, per: number, queries: number, run: (x: Float64Array) => Float64Array) => {
    const chunks = m.data.length / per;
    if (!Number.isInteger(chunks) || chunks < 1) throw new Error(`reference: ${m.modality} holds ${m.data.length} values, not a whole number of ${per}-value windows`);
    const out = new Float64Array(chunks * queries * H);
    for (let c = 0; c < chunks; c++) out.set(run(slice(m.data, c * per, per)), c * queries * H);
    return out;
  };

  const encode = (m: ReferenceMedia): Float64Array => {
    if (m.modality === 'speech') {
      if (!whisper) throw new Error('reference: no speech tower given');
      return chunked(m, whisper.melBins * whisper.frames, whisper.queries, (x) => whisper.encode(x));
    }
    if (m.modality === 'audio') {
      if (!beats) throw new Error('reference: no audio tower given');
      return chunked(m, (beats.frames + 1) * beats.melBins, beats.queries, (x) => beats.encode(x));
    }
    if (!clip) throw new Error('reference: no vision tower given');
    const per = 3 * clip.imageSize * clip.imageSize;
    const images = m.data.length / per;
    if (m.modality === 'image' && images !== 1) throw new Error(`reference: an image holds ${m.data.length} values, expected ${per}`);
    // Video: every frame through CLIP + projector, then the mean over frames (the reference's video path).
    const sum = new Float64Array(clip.tokens * H);
    for (let f = 0; f < images; f++) {
      const e = clip.encode(slice(m.data, f * per, per));
      for (let i = 0; i < sum.length; i++) sum[i] += e[i]!;
    }
    for (let i = 0; i < sum.length; i++) sum[i] /= images;
    return sum;
  };

  const inputs = (p: MultimodalPromptInput): ReferenceInput[] => {
    if (p.placeholders.length !== p.media.length) throw new Error(`reference: ${p.placeholders.length} placeholders but ${p.media.length} media items`);
    const out: ReferenceInput[] = [];
    let next = 0;
    p.placeholders.forEach((ph, i) => {
      const m = p.media[i]!;
      if ((m.modality === 'speech' ? 'audio' : m.modality) !== ph.modality) throw new Error(`reference: placeholder ${i} is <${ph.modality}> but media item ${i} is ${m.modality}`);
      while (next < ph.index) out.push(p.ids[next++]!);
      const block = encode(m);
      for (let t = 0; t < block.length / H; t++) out.push(block.subarray(t * H, (t + 1) * H));
    });
    while (next < p.ids.length) out.push(p.ids[next++]!);
    return out;
  };

  return {
    text,
    encode,
    inputs,
    forward: (p) => text.forwardInputs(inputs(p)),
    greedy: (p, steps) => text.greedyInputs(inputs(p), steps),
  };
}
