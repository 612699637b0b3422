/**
 * Whisper's log-mel spectrogram exactly as HF WhisperFeatureExtractor computes it, per 30 s chunk:
 * zero-pad the chunk to 480000 samples, reflect-pad 200 each side, 400-sample periodic Hann frames
 * every 160 samples, power spectrum, Slaney mel (80 bins), log10(max(x, 1e-10)), drop the last
 * frame (3001 -> 3000), clamp to (chunk max - 8), then (x + 4) / 4.
 */
import { nonZeroSpans, slaneyMelFilterbank } from './mel';
import { PowerSpectrum } from './rfft';

export const WHISPER_SAMPLE_RATE = 16000;
export const N_FFT = 400;
export const HOP_LENGTH = 160;
export const N_MELS = 80;
export const CHUNK_SAMPLES = 30 * WHISPER_SAMPLE_RATE;
export const CHUNK_FRAMES = CHUNK_SAMPLES / HOP_LENGTH;

let filterbank: Float64Array | null = null;
/** Each triangular mel filter is zero outside [first, last) of the power bins: only that span is summed. */
let filterSpans: Int32Array | null = null;

/** log10 of the floor power: what an all-zero frame (the padding after short audio) gives in every bin. */
const SILENT = Math.log10(1e-10);
const hann = Float64Array.from({ length: N_FFT }, (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / N_FFT));

function reflectIndex(j: number, n: number): number {
  if (j < 0) return -j;
  if (j >= n) return 2 * n - 2 - j;
  return j;
}

/** One chunk (<= 480000 samples at 16 kHz) -> [80, 3000] written into `out`. */
function chunkLogMel(chunk: Float64Array, out: Float32Array): void {
  filterbank ??= slaneyMelFilterbank(WHISPER_SAMPLE_RATE, N_FFT, N_MELS);
  const spectrum = new PowerSpectrum(N_FFT);
  const bins = spectrum.bins;
  filterSpans ??= nonZeroSpans(filterbank, N_MELS, bins);
  const fspans = filterSpans;
  const frame = new Float64Array(N_FFT);
  const power = new Float64Array(bins);
  const logSpec = new Float64Array(N_MELS * CHUNK_FRAMES);
  const pad = N_FFT / 2;
  const sampleAt = (j: number) => {
    const i = reflectIndex(j, CHUNK_SAMPLES);
    return i < chunk.length ? chunk[i]! : 0; // zero padding up to 30 s, before reflection
  };
  let max = -Infinity;
  for (let t = 0; t < CHUNK_FRAMES; t++) {
    const start = t * HOP_LENGTH - pad;
    let silent = true;
    for (let i = 0; i < N_FFT; i++) {
      frame[i] = sampleAt(start + i) * hann[i]!;
      if (frame[i] !== 0) silent = false;
    }
    // Short audio is zero-padded to 30 s: those frames have zero power, so skip their FFT (same result).
    if (!silent) spectrum.compute(frame, power);
    for (let m = 0; m < N_MELS; m++) {
      let v = SILENT;
      if (!silent) {
        let e = 0;
        const row = m * bins;
        for (let k = fspans[2 * m]!, end = fspans[2 * m + 1]!; k < end; k++) e += filterbank[row + k]! * power[k]!;
        v = Math.log10(Math.max(e, 1e-10));
      }
      logSpec[m * CHUNK_FRAMES + t] = v;
      if (v > max) max = v;
    }
  }
  const floor = max - 8;
  for (let i = 0; i < logSpec.length; i++) out[i] = (Math.max(logSpec[i]!, floor) + 4) / 4;
}

/** 16 kHz mono samples -> Float32Array [chunks, 80, 3000], one chunk per started 30 s. */
export function whisperLogMel(samples: Float64Array): { data: Float32Array; chunks: number } {
  const chunks = Math.max(1, Math.ceil(samples.length / CHUNK_SAMPLES));
  const data = new Float32Array(chunks * N_MELS * CHUNK_FRAMES);
  for (let c = 0; c < chunks; c++) {
    const chunk = samples.subarray(c * CHUNK_SAMPLES, (c + 1) * CHUNK_SAMPLES);
    chunkLogMel(chunk, data.subarray(c * N_MELS * CHUNK_FRAMES, (c + 1) * N_MELS * CHUNK_FRAMES));
  }
  return { data, chunks };
}
