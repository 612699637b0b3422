/**
 * Raw media -> the encoder units' inputs, as the bundle's `preprocessing` describes them. The edge's
 * preprocessors implement the Uni-MoE constants (CLIP 336 px, Whisper 80 x 3000 log-mel for speech,
 * BEATs' 2998 x 128 Kaldi filterbank per 30 s for audio, 8 video frames); `checkPreprocessing` refuses
 * a bundle that asks for anything else at startup rather than feeding its encoders wrongly prepared inputs.
 */
import type { Manifest, Preprocessing } from '@unimoe/shared/bundle/manifest';
import { preprocessAudio, preprocessSpeech } from '../preprocess/audio';
import { BEATS_CHUNK_FRAMES, BEATS_CHUNK_SAMPLES, BEATS_FBANK, BEATS_INPUT_ROWS, packBeatsInput } from '../preprocess/fbank';
import { CLIP_IMAGE_SIZE, CLIP_MEAN, CLIP_STD, preprocessImage } from '../preprocess/image';
import { MediaError } from '../preprocess/errors';
import type { MediaLimits } from '../preprocess/limits';
import { CHUNK_FRAMES, HOP_LENGTH, N_FFT, N_MELS, WHISPER_SAMPLE_RATE } from '../preprocess/logmel';
import { preprocessVideoFile, preprocessVideoFrames, VIDEO_FRAMES } from '../preprocess/video';

/** `speech` goes through Whisper, `audio` (music, environmental sound) through BEATs. */
export type MediaModality = 'image' | 'video' | 'speech' | 'audio';
export const MEDIA_MODALITIES: readonly MediaModality[] = ['image', 'video', 'speech', 'audio'];

/** One encoder input: `data` has shape `dims` ([1,3,S,S] image, [8,3,S,S] video frames, [chunks,80,3000] speech, [chunks,2999,128] audio: each chunk's filterbank then its valid-sample row). */
export interface MediaFeatures {
  modality: MediaModality;
  data: Float32Array;
  dims: number[];
}

/** The modalities of `manifest` this edge can prepare and encode (those with a preprocessing entry). */
export function servableModalities(manifest: Pick<Manifest, 'modalities' | 'preprocessing'>): MediaModality[] {
  return MEDIA_MODALITIES.filter((m) => manifest.modalities.includes(m) && manifest.preprocessing?.[m] !== undefined);
}

/** Throws (naming the field) when the bundle's preprocessing differs from what the edge implements. */
export function checkPreprocessing(pre: Preprocessing | undefined, bundle: string): void {
  const expect = (field: string, got: unknown, want: unknown) => {
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      throw new Error(`${bundle}: manifest preprocessing.${field} is ${JSON.stringify(got)}; this edge implements ${JSON.stringify(want)} only`);
    }
  };
  if (pre?.image) {
    expect('image.resize', pre.image.resize, CLIP_IMAGE_SIZE);
    expect('image.crop', pre.image.crop, CLIP_IMAGE_SIZE);
    expect('image.mean', pre.image.mean, CLIP_MEAN);
    expect('image.std', pre.image.std, CLIP_STD);
    if (Math.abs(pre.image.rescale - 1 / 255) > 1e-12) expect('image.rescale', pre.image.rescale, 1 / 255);
  }
  if (pre?.video) expect('video.frames', pre.video.frames, VIDEO_FRAMES);
  if (pre?.speech) {
    const a = pre.speech;
    expect('speech', [a.sampleRate, a.melBins, a.nFft, a.hopLength, a.frames], [WHISPER_SAMPLE_RATE, N_MELS, N_FFT, HOP_LENGTH, CHUNK_FRAMES]);
  }
  if (pre?.audio) {
    const want = { ...BEATS_FBANK, chunkSamples: BEATS_CHUNK_SAMPLES, frames: BEATS_CHUNK_FRAMES };
    for (const key of Object.keys(want) as (keyof typeof want)[]) expect(`audio.${key}`, pre.audio[key], want[key]);
  }
}

/**
 * Encoded image/speech/audio/video bytes -> encoder input; a video is one file or its frames (an array of
 * encoded images). `name` labels errors (a MediaError on bad media). Images and video frames are padded
 * to a square first when the bundle says `padToSquare` (LLaVA pads video frames as it pads images).
 */
export async function prepareFeatures(
  modality: MediaModality,
  bytes: Uint8Array | readonly Uint8Array[],
  name: string,
  pre: Preprocessing,
  limits?: Partial<MediaLimits>,
): Promise<MediaFeatures> {
  const S = CLIP_IMAGE_SIZE;
  const image = { padToSquare: pre.image?.padToSquare === true };
  if (Array.isArray(bytes) && modality !== 'video') throw new MediaError('unsupported', `${name}: only a video may be given as a list of frames`);
  if (modality === 'video') {
    const v = Array.isArray(bytes) ? await preprocessVideoFrames([...bytes], name, limits, image) : await preprocessVideoFile(bytes as Uint8Array, name, limits, image);
    return { modality, data: v.data, dims: [...v.shape] };
  }
  const file = bytes as Uint8Array;
  switch (modality) {
    case 'image':
      return { modality, data: await preprocessImage(file, name, limits, image), dims: [1, 3, S, S] };
    case 'speech': {
      const a = await preprocessSpeech(file, name, limits);
      return { modality, data: a.data, dims: [...a.shape] };
    }
    case 'audio': {
      const a = await preprocessAudio(file, name, limits);
      return { modality, data: packBeatsInput(a.data, a.validSamples!), dims: [a.shape[0], BEATS_INPUT_ROWS, a.shape[2]] };
    }
  }
}
