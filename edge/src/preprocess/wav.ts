/**
 * RIFF/WAVE parsing to float samples in [-1, 1), averaged to mono. Written here because the npm
 * WAV readers either depend on Node streams/Buffer or skip the malformed-header checks we need.
 * Integer PCM is scaled as sox/ffmpeg do: u8 (v-128)/128, s16 v/2^15, s24 v/2^23, s32 v/2^31.
 */
import { MediaError } from './errors';

export interface PcmAudio {
  sampleRate: number;
  /** Mono samples (channels averaged), float64 for the resampler and STFT. */
  samples: Float64Array;
}

const WAVE_FORMAT_PCM = 1;
const WAVE_FORMAT_IEEE_FLOAT = 3;
const WAVE_FORMAT_EXTENSIBLE = 0xfffe;
// The resampler's filter grows with in/out rate; absurd header rates must not size it.
const MIN_SAMPLE_RATE = 1000;
const MAX_SAMPLE_RATE = 768_000;
/** Size placeholders written by streaming encoders that never seek back. */
const UNKNOWN_SIZES = new Set([0, 0xffffffff]);

export function isWav(bytes: Uint8Array): boolean {
  const tag = (at: number) => String.fromCharCode(...bytes.subarray(at, at + 4));
  return bytes.length >= 12 && tag(0) === 'RIFF' && tag(8) === 'WAVE';
}

interface Format {
  codec: 'int' | 'uint8' | 'float';
  channels: number;
  sampleRate: number;
  bitsPerSample: number;
}

function readFormat(view: DataView, at: number, size: number, name: string): Format {
  if (size < 16) throw new MediaError('corrupt', `${name}: WAV fmt chunk is ${size} bytes, expected at least 16`);
  let tag = view.getUint16(at, true);
  const channels = view.getUint16(at + 2, true);
  const sampleRate = view.getUint32(at + 4, true);
  const bitsPerSample = view.getUint16(at + 14, true);
  if (tag === WAVE_FORMAT_EXTENSIBLE) {
    if (size < 40) throw new MediaError('corrupt', `${name}: WAVE_FORMAT_EXTENSIBLE fmt chunk is ${size} bytes, expected 40`);
    tag = view.getUint16(at + 24, true); // first two bytes of the SubFormat GUID are the format tag
  }
  if (channels === 0) throw new MediaError('corrupt', `${name}: WAV declares 0 channels`);
  if (sampleRate < MIN_SAMPLE_RATE || sampleRate > MAX_SAMPLE_RATE) {
    throw new MediaError('unsupported', `${name}: WAV sample rate ${sampleRate} Hz is outside ${MIN_SAMPLE_RATE}..${MAX_SAMPLE_RATE} Hz`);
  }
  if (tag === WAVE_FORMAT_PCM && bitsPerSample === 8) return { codec: 'uint8', channels, sampleRate, bitsPerSample };
  if (tag === WAVE_FORMAT_PCM && [16, 24, 32].includes(bitsPerSample)) return { codec: 'int', channels, sampleRate, bitsPerSample };
  if (tag === WAVE_FORMAT_IEEE_FLOAT && [32, 64].includes(bitsPerSample)) return { codec: 'float', channels, sampleRate, bitsPerSample };
  throw new MediaError(
    'unsupported',
    `${name}: WAV codec 0x${tag.toString(16)} with ${bitsPerSample}-bit samples is not supported (PCM 8/16/24/32-bit and float 32/64-bit are)`,
  );
}

function sampleReader(view: DataView, f: Format): (at: number) => number {
  if (f.codec === 'uint8') return (at) => (view.getUint8(at) - 128) / 128;
  if (f.codec === 'float') return f.bitsPerSample === 32 ? (at) => view.getFloat32(at, true) : (at) => view.getFloat64(at, true);
  switch (f.bitsPerSample) {
    case 16:
      return (at) => view.getInt16(at, true) / 32768;
    case 24:
      return (at) => (((view.getUint8(at + 2) << 24) | (view.getUint8(at + 1) << 16) | (view.getUint8(at) << 8)) >> 8) / 8388608;
    default:
      return (at) => view.getInt32(at, true) / 2147483648;
  }
}

export function parseWav(bytes: Uint8Array, name: string): PcmAudio {
  if (!isWav(bytes)) throw new MediaError('unsupported', `${name}: not a RIFF/WAVE file`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let format: Format | null = null;
  let p = 12;
  while (p + 8 <= bytes.length) {
    const id = String.fromCharCode(...bytes.subarray(p, p + 4));
    const declared = view.getUint32(p + 4, true);
    const body = p + 8;
    const available = bytes.length - body;
    if (id === 'fmt ') {
      if (declared > available) throw new MediaError('corrupt', `${name}: WAV is truncated inside the fmt chunk`);
      format = readFormat(view, body, declared, name);
    } else if (id === 'data') {
      if (format === null) throw new MediaError('corrupt', `${name}: WAV data chunk comes before any fmt chunk`);
      let size = declared;
      if (UNKNOWN_SIZES.has(declared)) size = available;
      else if (declared > available) {
        throw new MediaError('corrupt', `${name}: WAV is truncated: data chunk declares ${declared} bytes but only ${available} follow`);
      }
      return decodeSamples(view, body, size, format, name);
    }
    p = body + declared + (declared & 1); // chunks are word aligned
  }
  throw new MediaError('corrupt', `${name}: WAV has no ${format === null ? 'fmt' : 'data'} chunk (truncated?)`);
}

function decodeSamples(view: DataView, at: number, size: number, f: Format, name: string): PcmAudio {
  const frameBytes = (f.bitsPerSample / 8) * f.channels;
  const frames = Math.floor(size / frameBytes);
  if (frames === 0) throw new MediaError('empty', `${name}: WAV contains no audio samples`);
  const read = sampleReader(view, f);
  const samples = new Float64Array(frames);
  const bytesPerSample = f.bitsPerSample / 8;
  for (let i = 0; i < frames; i++) {
    let sum = 0;
    for (let c = 0; c < f.channels; c++) sum += read(at + i * frameBytes + c * bytesPerSample);
    samples[i] = sum / f.channels;
  }
  for (const v of samples) {
    if (!Number.isFinite(v)) throw new MediaError('corrupt', `${name}: WAV float samples contain NaN or infinity`);
  }
  return { sampleRate: f.sampleRate, samples };
}
