/**
 * Power spectrum of a real frame of any length through Bluestein's chirp-z algorithm on top of
 * fft.js (a maintained radix-4 FFT that only takes powers of two). Whisper's n_fft is 400, not a
 * power of two; Bluestein keeps it exact in float64 at O(m log m) instead of a 400x201 direct DFT.
 */
import FFT from 'fft.js';

export class PowerSpectrum {
  readonly n: number;
  readonly bins: number;
  private readonly m: number;
  private readonly fft: FFT;
  /** e^{-i pi k^2 / n}, interleaved re/im, k < n. */
  private readonly chirp: Float64Array;
  /** FFT of the conjugate chirp wrapped to length m. */
  private readonly chirpSpectrum: number[];
  private readonly a: number[];
  private readonly aSpectrum: number[];
  private readonly conv: number[];

  constructor(n: number) {
    this.n = n;
    this.bins = Math.floor(n / 2) + 1;
    let m = 1;
    while (m < 2 * n - 1) m <<= 1;
    this.m = m;
    this.fft = new FFT(m);
    this.chirp = new Float64Array(2 * n);
    for (let k = 0; k < n; k++) {
      // k^2 mod 2n keeps the angle small so it stays exact for large k.
      const angle = (Math.PI * ((k * k) % (2 * n))) / n;
      this.chirp[2 * k] = Math.cos(angle);
      this.chirp[2 * k + 1] = -Math.sin(angle);
    }
    const b = this.fft.createComplexArray() as number[];
    for (let k = 0; k < n; k++) {
      const re = this.chirp[2 * k]!;
      const im = -this.chirp[2 * k + 1]!;
      b[2 * k] = re;
      b[2 * k + 1] = im;
      if (k > 0) {
        b[2 * (m - k)] = re;
        b[2 * (m - k) + 1] = im;
      }
    }
    this.chirpSpectrum = this.fft.createComplexArray() as number[];
    this.fft.transform(this.chirpSpectrum, b);
    this.a = this.fft.createComplexArray() as number[];
    this.aSpectrum = this.fft.createComplexArray() as number[];
    this.conv = this.fft.createComplexArray() as number[];
  }

  /** |X_k|^2 for k = 0..n/2 of the real frame `x` (length n) into `out`. */
  compute(x: ArrayLike<number>, out: Float64Array): void {
    const { n, m, a, chirp } = this;
    for (let k = 0; k < n; k++) {
      a[2 * k] = x[k]! * chirp[2 * k]!;
      a[2 * k + 1] = x[k]! * chirp[2 * k + 1]!;
    }
    a.fill(0, 2 * n, 2 * m);
    this.fft.transform(this.aSpectrum, a);
    const s = this.aSpectrum;
    const c = this.chirpSpectrum;
    for (let k = 0; k < m; k++) {
      const re = s[2 * k]! * c[2 * k]! - s[2 * k + 1]! * c[2 * k + 1]!;
      const im = s[2 * k]! * c[2 * k + 1]! + s[2 * k + 1]! * c[2 * k]!;
      s[2 * k] = re;
      s[2 * k + 1] = im;
    }
    this.fft.inverseTransform(this.conv, s);
    for (let k = 0; k < this.bins; k++) {
      // The final chirp factor has unit magnitude, so it drops out of the power.
      const re = this.conv[2 * k]!;
      const im = this.conv[2 * k + 1]!;
      out[k] = re * re + im * im;
    }
  }
}
