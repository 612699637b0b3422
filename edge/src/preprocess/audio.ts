/**
 * Sound files -> encoder inputs: speech -> Whisper log-mel [chunks, 80, 3000]; audio (non-speech
 * sound, BEATs) -> Kaldi filterbank [chunks, 2998, 128]. Both decode the same way to 16 kHz mono: WAV
 * is parsed in pure TS (runs on Workers); other formats go through ffmpeg when it is on PATH (Node only).
 */
import { MediaError } from './errors';
import { BEATS_CHUNK_FRAMES, BEATS_FBANK, beatsChunks } from './fbank';
import { resolveLimits, type MediaLimits } from './limits';
import { WHISPER_SAMPLE_RATE, whisperLogMel } from './logmel';
import { resample } from './resample';
import { isWav, parseWav } from './wav';

export interface SoundFeatures {
  /** Float32Array [chunks, 80, 3000] (speech) or [chunks, 2998, 128] (audio). */
  data: Float32Array;
  shape: [number, number, number];
  /** Audio only: each chunk's count of real samples (the rest of a 30 s chunk is padding). */
  validSamples?: number[];
}

/** Decoded 16 kHz mono samples. */
export async function decodeSound(bytes: Uint8Array, name: string, limits: MediaLimits): Promise<Float64Array> {
  if (bytes.length === 0) throw new MediaError('empty', `${name}: audio file is empty`);
  if (bytes.length > limits.maxAudioBytes) {
    throw new MediaError('too_large', `${name}: ${bytes.length} bytes exceeds the audio limit of ${limits.maxAudioBytes} bytes`);
  }
  let samples: Float64Array;
  if (isWav(bytes)) {
    const pcm = parseWav(bytes, name);
    checkDuration(pcm.samples.length / pcm.sampleRate, name, limits);
    samples = resample(pcm.samples, pcm.sampleRate, WHISPER_SAMPLE_RATE);
  } else {
    const { decodeAudioWithFfmpeg } = await import('./ffmpeg');
    samples = await decodeAudioWithFfmpeg(bytes, name, limits);
    checkDuration(samples.length / WHISPER_SAMPLE_RATE, name, limits);
  }
  if (samples.length === 0) throw new MediaError('empty', `${name}: audio contains no samples`);
  return samples;
}

function checkDuration(seconds: number, name: string, limits: MediaLimits): void {
  if (seconds > limits.maxAudioSeconds) {
    throw new MediaError('too_large', `${name}: audio lasts ${seconds.toFixed(1)} s, over the limit of ${limits.maxAudioSeconds} s`);
  }
}

/** Speech (Whisper path): one [80, 3000] log-mel window per started 30 s. */
export async function preprocessSpeech(bytes: Uint8Array, name = 'speech', limits?: Partial<MediaLimits>): Promise<SoundFeatures> {
  const samples = await decodeSound(bytes, name, resolveLimits(limits));
  const { data, chunks } = whisperLogMel(samples);
  return { data, shape: [chunks, 80, 3000] };
}

/** Audio (BEATs path): one normalised [2998, 128] filterbank per started 30 s. */
export async function preprocessAudio(bytes: Uint8Array, name = 'audio', limits?: Partial<MediaLimits>): Promise<SoundFeatures> {
  const samples = await decodeSound(bytes, name, resolveLimits(limits));
  const { data, chunks, valid } = beatsChunks(samples);
  return { data, shape: [chunks, BEATS_CHUNK_FRAMES, BEATS_FBANK.melBins], validSamples: valid };
}
