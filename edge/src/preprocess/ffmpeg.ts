/**
 * Node-only decoding through the ffmpeg/ffprobe binaries (compressed audio, MP4/WebM video).
 * Imported dynamically by audio.ts/video.ts so the Workers bundle never pulls in child_process.
 * Input goes through a temporary file, not stdin: MP4s with the index at the end need seeking.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MediaError } from './errors';

interface RunResult {
  stdout: Uint8Array;
  stderr: string;
}

function runTool(tool: string, args: string[], name: string, timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 4000) stderr += d.toString();
    });
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        err.code === 'ENOENT'
          ? new MediaError('unsupported', `${name}: decoding this format needs ${tool}, which is not installed on this server`)
          : err,
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL') reject(new MediaError('too_large', `${name}: ${tool} did not finish within ${timeoutMs} ms`));
      else if (code !== 0) {
        const reason = stderr.trim().split('\n').slice(-2).join(' ') || `exit code ${code}`;
        reject(new MediaError('corrupt', `${name}: ${tool} cannot decode it (${reason})`));
      } else resolve({ stdout: Buffer.concat(out), stderr });
    });
  });
}

async function withTempInput<T>(bytes: Uint8Array, use: (path: string, dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'unimoe-media-'));
  try {
    const path = join(dir, 'input');
    await writeFile(path, bytes);
    return await use(path, dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Any audio ffmpeg reads -> 16 kHz mono, with the exact command of openai-whisper's load_audio
 * (16-bit output: that is also what makes ffmpeg's stereo downmix a plain average).
 */
export async function decodeAudioWithFfmpeg(bytes: Uint8Array, name: string, timeoutMs: number): Promise<Float64Array> {
  return withTempInput(bytes, async (path) => {
    const args = ['-nostdin', '-threads', '0', '-v', 'error', '-i', path, '-f', 's16le', '-ac', '1', '-acodec', 'pcm_s16le', '-ar', '16000', '-'];
    const { stdout } = await runTool('ffmpeg', args, name, timeoutMs);
    const view = new DataView(stdout.buffer, stdout.byteOffset, stdout.byteLength);
    const samples = new Float64Array(stdout.byteLength >> 1);
    for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
    return samples;
  });
}

/**
 * The frames at `pickIndices(frameCount)` of the first video stream, each as PNG bytes.
 * Frames are counted by decoding (ffprobe -count_frames), as decord's len(VideoReader) does.
 */
export async function extractVideoFramesWithFfmpeg(
  bytes: Uint8Array,
  name: string,
  timeoutMs: number,
  pickIndices: (frameCount: number) => number[],
): Promise<Uint8Array[]> {
  return withTempInput(bytes, async (path, dir) => {
    const probe = await runTool(
      'ffprobe',
      ['-v', 'error', '-select_streams', 'v:0', '-count_frames', '-show_entries', 'stream=nb_read_frames', '-of', 'csv=p=0', path],
      name,
      timeoutMs,
    );
    const frameCount = Number.parseInt(new TextDecoder().decode(probe.stdout).trim(), 10);
    if (!Number.isFinite(frameCount) || frameCount <= 0) throw new MediaError('empty', `${name}: no decodable video frames`);
    const wanted = pickIndices(frameCount);
    const unique = [...new Set(wanted)].sort((a, b) => a - b);
    const select = unique.map((i) => `eq(n\\,${i})`).join('+');
    await runTool(
      'ffmpeg',
      ['-nostdin', '-v', 'error', '-i', path, '-map', '0:v:0', '-vf', `select=${select}`, '-fps_mode', 'passthrough', '-pix_fmt', 'rgb24', join(dir, 'frame_%04d.png')],
      name,
      timeoutMs,
    );
    const files = (await readdir(dir)).filter((f) => f.startsWith('frame_')).sort();
    if (files.length !== unique.length) {
      throw new MediaError('corrupt', `${name}: expected ${unique.length} frames from ffmpeg, got ${files.length}`);
    }
    const byIndex = new Map<number, Uint8Array>();
    for (let k = 0; k < unique.length; k++) byIndex.set(unique[k]!, await readFile(join(dir, files[k]!)));
    return wanted.map((i) => byIndex.get(i)!);
  });
}
