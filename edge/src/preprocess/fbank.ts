/**
 * BEATs' input: torchaudio's `compliance.kaldi.fbank` with the arguments BEATsProcessor passes
 * (16 kHz samples scaled by 2^15, 128 mel bins, 25 ms frames every 10 ms), then
 * `(x - 15.41663) / (2 * 6.55582)`. Kaldi defaults throughout: snip_edges (frames fully inside the
 * signal), per-frame DC removal, pre-emphasis 0.97 (the first sample against itself), Povey window
 * (Hann with N-1 denominator, to the power 0.85), zero-padded to 512 for the FFT, power spectrum, mel
 * triangles on Kaldi's mel scale 1127 ln(1 + f/700) from 20 Hz to Nyquist (the Nyquist bin gets no
 * weight), log(max(x, float32 epsilon)). No dither (torchaudio's default is 0).
 * Why our own: torchaudio is Python; there is no maintained JS Kaldi filterbank. Computed in float64
 * (fft.js for the 512-point transform; frames of constant padding skip it, their output is the floor).
 *
 * Uni-MoE's audio loader cuts the samples into 30 s chunks (480000 samples) and pads the last chunk
 * to 30 s by repeating its last sample, then computes the filterbank per chunk (2998 frames each).
 */
import { BEATS_CHUNK_FRAMES, BEATS_CHUNK_SAMPLES, BEATS_FBANK, BEATS_INPUT_ROWS } from '@unimoe/shared/model/audio-constants';
import FFT from 'fft.js';
import { nonZeroSpans } from './mel';

const { sampleRate: SAMPLE_RATE, melBins: MEL_BINS, frameLength: FRAME_LENGTH, frameShift: FRAME_SHIFT, mean: MEAN, std: STD } = BEATS_FBANK;
export { BEATS_CHUNK_FRAMES, BEATS_CHUNK_SAMPLES, BEATS_FBANK, BEATS_INPUT_ROWS };
const PADDED = 512;
const BINS = PADDED / 2;
const LOW_FREQ = 20;
const PREEMPHASIS = 0.97;
/** torch.finfo(torch.float32).eps, the floor torchaudio's log uses for float32 input. */
const EPSILON = 1.1920928955078125e-7;

const melScale = (f: number) => 1127 * Math.log(1 + f / 700);

/** Kaldi's triangular filters over FFT bins 0..255: [128, 256]. */
function kaldiMelBanks(): Float64Array {
  const low = melScale(LOW_FREQ);
  const high = melScale(SAMPLE_RATE / 2);
  const delta = (high - low) / (MEL_BINS + 1);
  const banks = new Float64Array(MEL_BINS * BINS);
  for (let b = 0; b < MEL_BINS; b++) {
    const left = low + b * delta;
    const center = low + (b + 1) * delta;
    const right = low + (b + 2) * delta;
    for (let k = 0; k < BINS; k++) {
      const mel = melScale((SAMPLE_RATE / PADDED) * k);
      const up = (mel - left) / (center - left);
      const down = (right - mel) / (right - center);
      banks[b * BINS + k] = Math.max(0, Math.min(up, down));
    }
  }
  return banks;
}

let banks: Float64Array | null = null;
/** Each triangle is zero outside [first, last) of the FFT bins: only that span is summed. */
let spans: Int32Array | null = null;

const povey = Float64Array.from({ length: FRAME_LENGTH }, (_, i) => Math.pow(0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (FRAME_LENGTH - 1)), 0.85));

/** Frames with snip_edges: 1 + (n - 400) // 160, none when shorter than one window. */
export function fbankFrames(samples: number): number {
  return samples < FRAME_LENGTH ? 0 : 1 + Math.floor((samples - FRAME_LENGTH) / FRAME_SHIFT);
}

/**
 * `kaldi.fbank(waveform * 2^15, num_mel_bins=128, sample_frequency=16000, frame_length=25,
 * frame_shift=10)` of 16 kHz samples in [-1, 1], normalised as BEATs does: [frames, 128] into `out`.
 */
export function beatsFbank(samples: ArrayLike<number>, out: Float32Array = new Float32Array(fbankFrames(samples.length) * MEL_BINS)): Float32Array {
  banks ??= kaldiMelBanks();
  spans ??= nonZeroSpans(banks, MEL_BINS, BINS);
  const frames = fbankFrames(samples.length);
  // 512 is a power of two: fft.js's real transform directly (bins 0..255 are all the banks use).
  const fft = new FFT(PADDED);
  const spectrum = fft.createComplexArray() as number[];
  const frame = new Array<number>(PADDED).fill(0); // samples 400..511 stay zero: the padding to 512
  const power = new Float64Array(BINS);
  const floor = (Math.log(EPSILON) - MEAN) / (2 * STD);
  for (let t = 0; t < frames; t++) {
    const start = t * FRAME_SHIFT;
    let mean = 0;
    let constant = true;
    for (let i = 0; i < FRAME_LENGTH; i++) {
      mean += samples[start + i]! * 32768;
      if (samples[start + i] !== samples[start]) constant = false;
    }
    // A constant frame (the repeated-sample padding of a short chunk) has no energy after DC removal:
    // every bin is at the log floor, with or without the FFT.
    if (constant) {
      out.fill(floor, t * MEL_BINS, (t + 1) * MEL_BINS);
      continue;
    }
    mean /= FRAME_LENGTH;
    // Pre-emphasis from the last sample down, so each step still sees its unemphasised predecessor.
    for (let i = 0; i < FRAME_LENGTH; i++) frame[i] = samples[start + i]! * 32768 - mean;
    for (let i = FRAME_LENGTH - 1; i >= 1; i--) frame[i] = (frame[i]! - PREEMPHASIS * frame[i - 1]!) * povey[i]!;
    frame[0] = (frame[0]! - PREEMPHASIS * frame[0]!) * povey[0]!;
    fft.realTransform(spectrum, frame);
    for (let k = 0; k < BINS; k++) power[k] = spectrum[2 * k]! ** 2 + spectrum[2 * k + 1]! ** 2;
    for (let m = 0; m < MEL_BINS; m++) {
      let e = 0;
      const row = m * BINS;
      for (let k = spans[2 * m]!, end = spans[2 * m + 1]!; k < end; k++) e += banks[row + k]! * power[k]!;
      out[t * MEL_BINS + m] = (Math.log(Math.max(e, EPSILON)) - MEAN) / (2 * STD);
    }
  }
  return out;
}

/**
 * 16 kHz mono samples -> [chunks, 2998, 128]: one chunk per started 30 s (at least one), the last
 * padded to 480000 samples with its own last sample, as Uni-MoE's audio loader does.
 */
export function beatsChunks(samples: Float64Array): { data: Float32Array; chunks: number; valid: number[] } {
  const chunks = Math.max(1, Math.ceil(samples.length / BEATS_CHUNK_SAMPLES));
  const per = BEATS_CHUNK_FRAMES * MEL_BINS;
  const data = new Float32Array(chunks * per);
  const padded = new Float64Array(BEATS_CHUNK_SAMPLES);
  const valid: number[] = [];
  for (let c = 0; c < chunks; c++) {
    const chunk = samples.subarray(c * BEATS_CHUNK_SAMPLES, (c + 1) * BEATS_CHUNK_SAMPLES);
    valid.push(chunk.length);
    let input: Float64Array = chunk;
    if (chunk.length < BEATS_CHUNK_SAMPLES) {
      padded.set(chunk);
      padded.fill(chunk.length > 0 ? chunk[chunk.length - 1]! : 0, chunk.length);
      input = padded;
    }
    beatsFbank(input, data.subarray(c * per, (c + 1) * per));
  }
  return { data, chunks, valid };
}

/**
 * The audio unit's input [chunks, 2999, 128]: each chunk's [2998, 128] filterbank, then a row whose
 * first value is its count of real samples (the unit turns it into the reference's padding mask).
 */
export function packBeatsInput(fbank: Float32Array, valid: readonly number[]): Float32Array {
  const per = BEATS_CHUNK_FRAMES * MEL_BINS;
  const out = new Float32Array(valid.length * BEATS_INPUT_ROWS * MEL_BINS);
  valid.forEach((v, c) => {
    out.set(fbank.subarray(c * per, (c + 1) * per), c * BEATS_INPUT_ROWS * MEL_BINS);
    out[c * BEATS_INPUT_ROWS * MEL_BINS + per] = v;
  });
  return out;
}
