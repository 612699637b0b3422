/**
 * `unimoe preprocess image|speech|fbank|video <file...> --out FILE.f32`: writes the model-ready
 * features as little-endian float32 and prints {"shape": [...]} on the last line. `speech` is the
 * Whisper log-mel, `fbank` BEATs' filterbank (the audio path). For video, one file is a video
 * (decoded with ffmpeg); several files are its frames in order.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { preprocessAudio, preprocessSpeech } from './audio';
import { MediaError } from './errors';
import { CLIP_IMAGE_SIZE, preprocessImage } from './image';
import { preprocessVideoFile, preprocessVideoFrames } from './video';

const USAGE = 'usage: unimoe preprocess image|speech|fbank|video <file> [more frame files for video] --out FILE.f32';
const KINDS = ['image', 'speech', 'fbank', 'video'];

interface Features {
  data: Float32Array;
  shape: number[];
}

function parseArgs(argv: string[]): { kind: string; files: string[]; out: string } | string {
  const args = [...argv];
  const outAt = args.indexOf('--out');
  if (outAt < 0 || outAt + 1 >= args.length) return '--out FILE is required';
  const out = args.splice(outAt, 2)[1]!;
  const [kind, ...files] = args;
  if (kind === 'audio') return '"audio" is ambiguous: use "speech" (Whisper log-mel) or "fbank" (BEATs filterbank, the audio path)';
  if (!KINDS.includes(kind ?? '')) return `unknown media kind "${kind ?? ''}"`;
  if (files.length === 0) return 'no input file given';
  if (kind !== 'video' && files.length > 1) return `${kind} takes exactly one file`;
  const unknownFlag = files.find((f) => f.startsWith('--'));
  if (unknownFlag) return `unknown option ${unknownFlag}`;
  return { kind, files, out };
}

async function compute(kind: string, files: string[]): Promise<Features> {
  const contents = await Promise.all(files.map((f) => readFile(f)));
  const names = files.map((f) => basename(f));
  if (kind === 'image') {
    return { data: await preprocessImage(contents[0]!, names[0]), shape: [3, CLIP_IMAGE_SIZE, CLIP_IMAGE_SIZE] };
  }
  if (kind === 'speech') return preprocessSpeech(contents[0]!, names[0]);
  if (kind === 'fbank') return preprocessAudio(contents[0]!, names[0]);
  return files.length === 1 ? preprocessVideoFile(contents[0]!, names[0]) : preprocessVideoFrames(contents, names[0]);
}

/** Float32 little-endian bytes regardless of the host's byte order. */
function toLittleEndian(data: Float32Array): Uint8Array {
  const bytes = new Uint8Array(data.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < data.length; i++) view.setFloat32(4 * i, data[i]!, true);
  return bytes;
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parseArgs(argv);
  if (typeof parsed === 'string') {
    console.error(`preprocess: ${parsed}\n${USAGE}`);
    return 2;
  }
  try {
    const features = await compute(parsed.kind, parsed.files);
    await writeFile(parsed.out, toLittleEndian(features.data));
    console.log(JSON.stringify({ shape: features.shape }));
    return 0;
  } catch (err) {
    if (err instanceof MediaError) {
      console.error(`preprocess: ${err.message}`);
      return 1;
    }
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EISDIR' || code === 'EACCES') {
      console.error(`preprocess: ${(err as Error).message}`);
      return 1;
    }
    throw err;
  }
}
