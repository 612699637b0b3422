/**
 * Node-only decoding through the ffmpeg/ffprobe binaries (compressed audio, MP4/WebM video), sandboxed:
 *  - input only on stdin (`pipe:`, plus ffmpeg's `cache:` for MP4s that need to seek back to their index):
 *    no file or network protocol is allowed, so no path or URL inside a file can be opened;
 *  - the demuxer is forced and the decoders whitelisted from the file's magic bytes (containers.ts);
 *  - CPU time and address space are capped with ulimit, wall time with a kill;
 *  - output is counted as it streams and ffmpeg is killed the moment it exceeds its bound, so a
 *    decompression bomb never gets to materialise.
 * Imported dynamically by audio.ts/video.ts so the Workers bundle never pulls in child_process.
 */
import { spawn } from 'node:child_process';
import { audioContainer, videoContainer, type Container } from './containers';
import { MediaError } from './errors';
import type { MediaLimits } from './limits';

/** What one ffmpeg/ffprobe run may use. */
export type ToolLimits = Pick<MediaLimits, 'ffmpegTimeoutMs' | 'ffmpegCpuSeconds' | 'ffmpegMemoryBytes'> & {
  /** Stdout beyond this is refused (and the process killed) with `overflow`'s message. */
  maxOutputBytes: number;
  overflow: string;
};

function runTool(tool: 'ffmpeg' | 'ffprobe', args: string[], input: Uint8Array, name: string, limits: ToolLimits): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    // ulimit through sh: Node cannot set a child's rlimits, and dash's ulimit is everywhere ffmpeg is.
    const ulimits = `ulimit -t ${Math.max(1, Math.ceil(limits.ffmpegCpuSeconds))} && ulimit -v ${Math.ceil(limits.ffmpegMemoryBytes / 1024)} && exec "$0" "$@"`;
    const child = spawn('/bin/sh', ['-c', ulimits, tool, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let outBytes = 0;
    let stderr = '';
    let refused: MediaError | undefined;
    const refuse = (err: MediaError) => {
      refused ??= err;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => refuse(new MediaError('too_large', `${name}: ${tool} did not finish within ${limits.ffmpegTimeoutMs} ms`)), limits.ffmpegTimeoutMs);
    child.stdout.on('data', (d: Buffer) => {
      outBytes += d.length;
      if (outBytes > limits.maxOutputBytes) refuse(new MediaError('too_large', `${name}: ${limits.overflow}`));
      else out.push(d);
    });
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 4000) stderr += d.toString();
    });
    child.stdin.on('error', () => {}); // ffmpeg may stop reading early (error, or killed): EPIPE is expected then
    child.stdin.end(input);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const lines = stderr.split('\n').filter((l) => l.trim() && !/seekback|Last message repeated/.test(l));
      if (refused) reject(refused);
      else if (code !== 0 && lines.some((l) => /Cannot allocate memory|out of memory|failed to map segment/i.test(l))) {
        reject(new MediaError('too_large', `${name}: decoding needs more than the ${limits.ffmpegMemoryBytes} bytes of memory allowed`));
      } else if (code === 127) reject(new MediaError('unsupported', `${name}: decoding this format needs ${tool}, which is not installed on this server`));
      else if (signal === 'SIGXCPU' || signal === 'SIGKILL') reject(new MediaError('too_large', `${name}: ${tool} exceeded its CPU time limit of ${limits.ffmpegCpuSeconds} s`));
      else if (code !== 0) reject(new MediaError('corrupt', `${name}: ${tool} cannot decode it (${lines.slice(-2).join(' ') || `exit code ${code ?? signal}`})`));
      else resolve(Buffer.concat(out));
    });
  });
}

/** The input options of every command line: stdin only, one forced demuxer, whitelisted decoders. */
function inputOptions(c: Container): string[] {
  return ['-protocol_whitelist', c.seeks ? 'cache,pipe' : 'pipe', '-format_whitelist', c.demuxer, '-codec_whitelist', c.decoders.join(','), '-f', c.demuxer];
}

/** stdin, through ffmpeg's `cache:` when the demuxer must seek backwards. */
const inputUrl = (c: Container) => (c.seeks ? 'cache:pipe:0' : 'pipe:0');
const inputArgs = (c: Container) => [...inputOptions(c), '-i', inputUrl(c)];

const SMALL_OUTPUT = 64 * 1024;

/** Cloudflare Workers cannot start processes: a format that needs ffmpeg is refused there by name. */
function refuseOnWorkers(name: string, what: string, instead: string): void {
  if (globalThis.navigator?.userAgent !== 'Cloudflare-Workers') return;
  throw new MediaError('unsupported', `${name}: ${what} needs ffmpeg to decode, which this server (a Cloudflare Worker) cannot run; ${instead}`);
}

/**
 * Any audio ffmpeg reads -> 16 kHz mono, with the exact command of openai-whisper's load_audio
 * (16-bit output: that is also what makes ffmpeg's stereo downmix a plain average). Decoding stops
 * as soon as the output passes `maxAudioSeconds`.
 */
export async function decodeAudioWithFfmpeg(bytes: Uint8Array, name: string, limits: MediaLimits): Promise<Float64Array> {
  const container = audioContainer(bytes);
  if (!container) throw new MediaError('unsupported', `${name}: not a WAV, MP3, FLAC, Ogg, MP4/M4A or WebM/Matroska audio file`);
  refuseOnWorkers(name, `${container.format} audio`, 'send WAV audio, which is decoded without ffmpeg');
  const args = ['-nostdin', '-threads', '1', '-v', 'error', ...inputArgs(container), '-map', '0:a:0', '-f', 's16le', '-ac', '1', '-acodec', 'pcm_s16le', '-ar', '16000', '-'];
  const stdout = await runTool('ffmpeg', args, bytes, name, {
    ...limits,
    maxOutputBytes: Math.floor(limits.maxAudioSeconds * 16_000) * 2,
    overflow: `audio lasts more than the limit of ${limits.maxAudioSeconds} s`,
  });
  const view = new DataView(stdout.buffer, stdout.byteOffset, stdout.byteLength);
  const samples = new Float64Array(stdout.byteLength >> 1);
  for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
  return samples;
}

/**
 * The frames at `pickIndices(frameCount)` of the first video stream, each as PNG bytes. Frames are
 * counted by decoding, as decord's len(VideoReader) does, but never past `maxVideoFrames`; the frame
 * size is checked against `maxImagePixels` before any frame is decoded.
 */
export async function extractVideoFramesWithFfmpeg(
  bytes: Uint8Array,
  name: string,
  limits: MediaLimits,
  pickIndices: (frameCount: number) => number[],
): Promise<Uint8Array[]> {
  const container = videoContainer(bytes);
  if (!container) throw new MediaError('unsupported', `${name}: not an MP4/MOV or WebM/Matroska video file`);
  refuseOnWorkers(name, `${container.format} video`, 'send the video as a list of frames (PNG, JPEG, WebP or GIF images)');
  const small = { ...limits, maxOutputBytes: SMALL_OUTPUT, overflow: 'ffprobe printed more than expected' };
  const probe = (extra: string[]) =>
    runTool('ffprobe', ['-v', 'error', ...inputOptions(container), '-select_streams', 'v:0', ...extra, '-of', 'csv=p=0', '-i', inputUrl(container)], bytes, name, small);
  const [width, height] = new TextDecoder().decode(await probe(['-show_entries', 'stream=width,height'])).trim().split(',').map(Number);
  if (!width || !height) throw new MediaError('empty', `${name}: no video stream`);
  if (width * height > limits.maxImagePixels) {
    throw new MediaError('too_large', `${name}: frames of ${width}x${height} exceed the limit of ${limits.maxImagePixels} pixels`);
  }
  const counted = await probe(['-count_frames', '-read_intervals', `%+#${limits.maxVideoFrames + 1}`, '-show_entries', 'stream=nb_read_frames']);
  const frameCount = Number.parseInt(new TextDecoder().decode(counted).trim(), 10);
  if (!Number.isFinite(frameCount) || frameCount <= 0) throw new MediaError('empty', `${name}: no decodable video frames`);
  if (frameCount > limits.maxVideoFrames) throw new MediaError('too_large', `${name}: more than the limit of ${limits.maxVideoFrames} frames`);
  const wanted = pickIndices(frameCount);
  const unique = [...new Set(wanted)].sort((a, b) => a - b);
  const select = unique.map((i) => `eq(n\\,${i})`).join('+');
  // A PNG of w*h RGB is at most its filtered rows plus zlib's stored-block overhead (5 bytes / 16 KiB) and chunk headers.
  const pngBound = Math.ceil(height * (3 * width + 1) * 1.01) + 4096;
  const stdout = await runTool(
    'ffmpeg',
    ['-nostdin', '-threads', '2', '-v', 'error', ...inputArgs(container), '-map', '0:v:0', '-vf', `select=${select}`, '-fps_mode', 'passthrough',
      '-frames:v', String(unique.length), '-pix_fmt', 'rgb24', '-f', 'image2pipe', '-c:v', 'png', '-'],
    bytes,
    name,
    { ...limits, maxOutputBytes: unique.length * pngBound, overflow: `decoded frames exceed ${unique.length * pngBound} bytes (frame size changed mid-stream?)` },
  );
  const pngs = splitPngStream(stdout);
  if (pngs.length !== unique.length) throw new MediaError('corrupt', `${name}: expected ${unique.length} frames from ffmpeg, got ${pngs.length}`);
  const byIndex = new Map(unique.map((frame, k) => [frame, pngs[k]!]));
  return wanted.map((i) => byIndex.get(i)!);
}

/** Splits ffmpeg's image2pipe output (PNG files back to back) at each IEND chunk. */
export function splitPngStream(bytes: Uint8Array): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const files: Uint8Array[] = [];
  let start = 0;
  let pos = 8; // PNG signature
  while (pos + 12 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = String.fromCharCode(bytes[pos + 4]!, bytes[pos + 5]!, bytes[pos + 6]!, bytes[pos + 7]!);
    pos += 12 + length;
    if (type === 'IEND') {
      files.push(bytes.subarray(start, pos));
      start = pos;
      pos += 8;
    }
  }
  return files;
}
