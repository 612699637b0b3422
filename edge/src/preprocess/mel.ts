/**
 * librosa.filters.mel(sr, n_fft, n_mels, htk=False, norm='slaney'): triangles on the Slaney mel
 * scale (linear below 1 kHz, logarithmic above), each scaled to unit area. The same matrix that
 * WhisperFeatureExtractor builds with mel_filter_bank(norm='slaney', mel_scale='slaney').
 */
const F_SP = 200 / 3;
const MIN_LOG_HZ = 1000;
const MIN_LOG_MEL = MIN_LOG_HZ / F_SP;
const LOG_STEP = Math.log(6.4) / 27;

export function hzToMel(hz: number): number {
  return hz >= MIN_LOG_HZ ? MIN_LOG_MEL + Math.log(hz / MIN_LOG_HZ) / LOG_STEP : hz / F_SP;
}

export function melToHz(mel: number): number {
  return mel >= MIN_LOG_MEL ? MIN_LOG_HZ * Math.exp(LOG_STEP * (mel - MIN_LOG_MEL)) : F_SP * mel;
}

/** Row-major [nMels, nFft/2 + 1]. */
export function slaneyMelFilterbank(sampleRate: number, nFft: number, nMels: number): Float64Array {
  const bins = Math.floor(nFft / 2) + 1;
  const fftFreq = (k: number) => (k * sampleRate) / nFft;
  const melMax = hzToMel(sampleRate / 2);
  const edges = Array.from({ length: nMels + 2 }, (_, i) => melToHz((melMax * i) / (nMels + 1)));
  const weights = new Float64Array(nMels * bins);
  for (let m = 0; m < nMels; m++) {
    const [lo, mid, hi] = [edges[m]!, edges[m + 1]!, edges[m + 2]!];
    const enorm = 2 / (hi - lo);
    for (let k = 0; k < bins; k++) {
      const f = fftFreq(k);
      const rising = (f - lo) / (mid - lo);
      const falling = (hi - f) / (hi - mid);
      weights[m * bins + k] = Math.max(0, Math.min(rising, falling)) * enorm;
    }
  }
  return weights;
}

/**
 * Per filter of a row-major [filters, bins] bank, the span [first, last) of bins where it is non-zero
 * (as pairs): triangles are zero elsewhere, so a filter only needs to sum its own span.
 */
export function nonZeroSpans(bank: Float64Array, filters: number, bins: number): Int32Array {
  const out = new Int32Array(2 * filters);
  for (let m = 0; m < filters; m++) {
    let first = bins;
    let last = 0;
    for (let k = 0; k < bins; k++) {
      if (bank[m * bins + k] !== 0) {
        first = Math.min(first, k);
        last = k + 1;
      }
    }
    out[2 * m] = first;
    out[2 * m + 1] = Math.max(first, last);
  }
  return out;
}
