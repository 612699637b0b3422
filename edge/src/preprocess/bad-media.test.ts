import { describe, expect, it } from 'vitest';
import { preprocessSpeech } from './audio';
import { MediaError, type MediaErrorKind } from './errors';
import { fixture } from './fixtures.test-util';
import { preprocessImage } from './image';
import { preprocessVideoFrames } from './video';

async function expectMediaError(work: Promise<unknown>, kind: MediaErrorKind, message: RegExp): Promise<void> {
  const err = await work.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MediaError);
  expect((err as MediaError).kind).toBe(kind);
  expect((err as MediaError).message).toMatch(message);
}

function crc32(bytes: Uint8Array): number {
  let crc = ~0;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return ~crc >>> 0;
}

function pngChunk(type: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, body.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(body, 8);
  view.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)));
  return out;
}

/** A valid-looking PNG whose IHDR declares width x height, with a few bytes of image data. */
function pngDeclaring(width: number, height: number): Uint8Array {
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const parts = [
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', new Uint8Array([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])),
    pngChunk('IEND', new Uint8Array(0)),
  ];
  return Uint8Array.from(parts.flatMap((p) => [...p]));
}

function withUint32(bytes: Uint8Array, at: number, value: number): Uint8Array {
  const copy = bytes.slice();
  new DataView(copy.buffer).setUint32(at, value, true);
  return copy;
}

describe('bad images are refused with a MediaError', () => {
  it('refuses a decompression bomb from its header, before decoding', async () => {
    const started = performance.now();
    await expectMediaError(preprocessImage(pngDeclaring(50000, 50000), 'bomb.png'), 'too_large', /bomb\.png: PNG declares 50000x50000 = 2500000000 pixels/);
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it('refuses a PNG whose pixel data is corrupt', async () => {
    await expectMediaError(preprocessImage(pngDeclaring(4, 4), 'short.png'), 'corrupt', /short\.png: PNG: cannot decode/);
    const png = fixture('rgb_64x48.png');
    const garbled = png.slice();
    for (let i = 60; i < garbled.length - 20; i++) garbled[i] = (garbled[i]! * 31 + 7) & 0xff;
    await expectMediaError(preprocessImage(garbled, 'garbled.png'), 'corrupt', /garbled\.png/);
  });

  it('refuses truncated JPEG, GIF and WebP files', async () => {
    for (const name of ['photo_800x600.jpg', 'anim_40x40.gif', 'lossy_120x90.webp']) {
      const bytes = fixture(name);
      await expectMediaError(preprocessImage(bytes.subarray(0, bytes.length >> 1), name), 'corrupt', new RegExp(name.replace('.', '\\.')));
    }
  });

  it('refuses an unsupported format, naming it', async () => {
    const bmp = new Uint8Array(64);
    bmp.set([0x42, 0x4d]);
    await expectMediaError(preprocessImage(bmp, 'picture.bmp'), 'unsupported', /picture\.bmp: not a PNG, JPEG, GIF or WebP/);
  });

  it('refuses an oversized file before looking at it', async () => {
    await expectMediaError(preprocessImage(fixture('rgb_64x48.png'), 'big.png', { maxImageBytes: 1000 }), 'too_large', /exceeds the image limit of 1000 bytes/);
  });

  it('names the frame when a video frame is bad', async () => {
    const frames = Array.from({ length: 8 }, (_, i) => (i === 3 ? new Uint8Array([1, 2, 3]) : fixture('rgb_64x48.png')));
    await expectMediaError(preprocessVideoFrames(frames, 'clip'), 'unsupported', /clip frame 3/);
  });
});

describe('bad audio is refused with a MediaError', () => {
  const wav = fixture('speech_16k_s16.wav');

  it('refuses empty input and a WAV without samples', async () => {
    await expectMediaError(preprocessSpeech(new Uint8Array(0), 'empty.wav'), 'empty', /empty\.wav: audio file is empty/);
    const header = withUint32(wav.subarray(0, 44), 40, 0);
    // A zero data size is also the streaming placeholder: with nothing after it, there are no samples.
    await expectMediaError(preprocessSpeech(header, 'silent.wav'), 'empty', /silent\.wav: WAV contains no audio samples/);
  });

  it('refuses a truncated WAV', async () => {
    await expectMediaError(preprocessSpeech(wav.subarray(0, 5000), 'cut.wav'), 'corrupt', /cut\.wav: WAV is truncated: data chunk declares 25600 bytes but only 4956 follow/);
    await expectMediaError(preprocessSpeech(wav.subarray(0, 30), 'cut.wav'), 'corrupt', /cut\.wav: WAV is truncated inside the fmt chunk/);
  });

  it('refuses absurd header sizes', async () => {
    await expectMediaError(preprocessSpeech(withUint32(wav, 40, 0x7fffffff), 'huge.wav'), 'corrupt', /declares 2147483647 bytes/);
    await expectMediaError(preprocessSpeech(withUint32(wav, 24, 4_000_000_000), 'rate.wav'), 'unsupported', /sample rate 4000000000 Hz/);
  });

  it('refuses an unsupported WAV codec', async () => {
    const mp3InWav = wav.slice();
    new DataView(mp3InWav.buffer).setUint16(20, 0x55, true);
    await expectMediaError(preprocessSpeech(mp3InWav, 'mp3.wav'), 'unsupported', /mp3\.wav: WAV codec 0x55/);
  });

  it('refuses audio over the duration limit', async () => {
    await expectMediaError(preprocessSpeech(wav, 'long.wav', { maxAudioSeconds: 0.5 }), 'too_large', /lasts 0\.8 s, over the limit of 0\.5 s/);
  });

  it('reports unrecognised and undecodable non-WAV audio', async () => {
    await expectMediaError(preprocessSpeech(new TextEncoder().encode('definitely not audio'), 'notes.txt'), 'unsupported', /notes\.txt: not a WAV, MP3, FLAC/);
    await expectMediaError(preprocessSpeech(new TextEncoder().encode('OggS but nothing after'), 'cut.ogg'), 'corrupt', /cut\.ogg: ffmpeg cannot decode it/);
  });
});
