/**
 * ffmpeg runs sandboxed (edge/src/preprocess/ffmpeg.ts): input on stdin only with a forced demuxer, so
 * playlists and file/network URLs inside a file go nowhere; decoding is cut off while it streams once
 * the output passes the duration/frame bounds; ulimit caps its memory. Media are made with ffmpeg at test time.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { preprocessSpeech } from '@unimoe/edge/preprocess/audio';
import { MediaError } from '@unimoe/edge/preprocess/errors';
import { DEFAULT_MEDIA_LIMITS } from '@unimoe/edge/preprocess/limits';
import { preprocessVideoFile } from '@unimoe/edge/preprocess/video';
import { makeTempDir } from '../helpers/tmp';

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
const media: Record<string, Uint8Array> = {};

function make(name: string, args: string[]): void {
  execFileSync('ffmpeg', ['-v', 'error', '-y', ...args, join(tmp.dir, name)]);
  media[name] = new Uint8Array(readFileSync(join(tmp.dir, name)));
}

async function mediaError(p: Promise<unknown>): Promise<MediaError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(MediaError);
  return err as MediaError;
}

beforeAll(async () => {
  tmp = await makeTempDir('ffmpeg-sandbox');
  make('ten-minutes.flac', ['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=8000:duration=600', '-c:a', 'flac']);
  make('three-seconds.ogg', ['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=16000:duration=3', '-c:a', 'libvorbis']);
  make('200-frames.mkv', ['-f', 'lavfi', '-i', 'testsrc=size=32x24:rate=50', '-frames:v', '200', '-c:v', 'ffv1']);
  make('moov-at-end.mp4', ['-f', 'lavfi', '-i', 'testsrc=size=64x48:rate=10', '-frames:v', '20', '-c:v', 'libx264', '-pix_fmt', 'yuv420p']);
});
afterAll(() => tmp?.cleanup());

describe('ffmpeg sandbox', () => {
  it('decodes ordinary audio and video fed on stdin (an MP4 with its index at the end included)', async () => {
    const audio = await preprocessSpeech(media['three-seconds.ogg']!, 'a.ogg');
    expect(audio.shape).toEqual([1, 80, 3000]);
    const video = await preprocessVideoFile(media['moov-at-end.mp4']!, 'v.mp4');
    expect(video.shape).toEqual([8, 3, 336, 336]);
  });

  it('stops decoding audio as soon as its output passes the duration limit, not after', async () => {
    const err = await mediaError(preprocessSpeech(media['ten-minutes.flac']!, 'long.flac', { maxAudioSeconds: 5 }));
    expect(err.kind).toBe('too_large');
    // The streaming bound's message (the duration check after a full decode says "audio lasts 600.0 s").
    expect(err.message).toBe('long.flac: audio lasts more than the limit of 5 s');
  });

  it('counts video frames only up to the frame limit, and checks the frame size before decoding', async () => {
    const frames = await mediaError(preprocessVideoFile(media['200-frames.mkv']!, 'many.mkv', { maxVideoFrames: 50 }));
    expect(frames.message).toBe('many.mkv: more than the limit of 50 frames');
    const pixels = await mediaError(preprocessVideoFile(media['200-frames.mkv']!, 'big.mkv', { maxImagePixels: 32 * 24 - 1 }));
    expect(pixels.message).toBe('big.mkv: frames of 32x24 exceed the limit of 767 pixels');
    // Within the limits the same file decodes.
    expect((await preprocessVideoFile(media['200-frames.mkv']!, 'ok.mkv', { maxVideoFrames: 200 })).shape).toEqual([8, 3, 336, 336]);
  });

  it('refuses playlists and concat lists that point at files or URLs, without running them', async () => {
    const playlist = new TextEncoder().encode('#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n');
    const concat = new TextEncoder().encode(`ffconcat version 1.0\nfile '${join(tmp.dir, 'three-seconds.ogg')}'\n`);
    for (const bytes of [playlist, concat]) {
      expect((await mediaError(preprocessSpeech(bytes, 'list.m3u8'))).kind).toBe('unsupported');
      expect((await mediaError(preprocessVideoFile(bytes, 'list.m3u8'))).kind).toBe('unsupported');
    }
  });

  it('a file with a known magic but garbage after it fails in the forced demuxer as corrupt', async () => {
    // An "Ogg" whose pages are garbage: the ogg demuxer (and only it) fails, as a corrupt file.
    const fake = new Uint8Array([...new TextEncoder().encode('OggS'), ...new Uint8Array(2000).fill(7)]);
    const err = await mediaError(preprocessSpeech(fake, 'fake.ogg'));
    expect(err.kind).toBe('corrupt');
  });

  it('runs ffmpeg under a memory ulimit: too little address space is refused as too large, not a crash', async () => {
    const err = await mediaError(preprocessSpeech(media['three-seconds.ogg']!, 'tight.ogg', { ffmpegMemoryBytes: 32 * 1024 * 1024 }));
    expect(err.kind).toBe('too_large');
    expect(err.message).toMatch(/more than the 33554432 bytes of memory allowed/);
    expect(DEFAULT_MEDIA_LIMITS.ffmpegMemoryBytes).toBeGreaterThan(32 * 1024 * 1024);
  });
});
