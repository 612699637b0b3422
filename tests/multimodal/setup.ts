/**
 * Shared setup of the multimodal tests: a make-tiny Uni-MoE 4e checkpoint with tiny CLIP, Whisper and
 * BEATs (+ Q-Former) towers (real geometry: 576 image tokens, 50 per 30 s of speech, 50 per 30 s of
 * audio), converted by the CLI with the tower flags,
 * the float64 multimodal reference over the same checkpoint, and media from tests/fixtures/media.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run as convertCommand } from '@unimoe/edge/cli/commands/convert';
import { makeTiny } from '@unimoe/shared/tiny/make-tiny';
import { TINY_AUDIO_ALIGNER_DIR, TINY_AUDIO_DIR, TINY_SPEECH_DIR, TINY_VISION_DIR } from '@unimoe/shared/tiny/towers';
import { FIXTURES } from '../helpers/fixtures';
import { loadMultimodalReference, type MultimodalReference } from '../reference/multimodal';

export const MODEL = 'tiny-mm';

export interface MultimodalFixture {
  checkpoint: string;
  bundle: string;
  reference: MultimodalReference;
}

export async function buildMultimodalFixture(dir: string): Promise<MultimodalFixture> {
  const { checkpoint, bundle } = await buildMultimodalBundle(dir);
  const vision = join(checkpoint, TINY_VISION_DIR);
  const speech = join(checkpoint, TINY_SPEECH_DIR);
  const audio = { beats: join(checkpoint, TINY_AUDIO_DIR, 'BEATs_tiny.pt'), aligner: join(checkpoint, TINY_AUDIO_ALIGNER_DIR), frames: 2998, chunkSamples: 480000 };
  return { checkpoint, bundle, reference: await loadMultimodalReference(checkpoint, { vision, speech, audio }) };
}

/** The checkpoint and its bundle only (no float64 reference), for tests that need a multimodal server. */
export async function buildMultimodalBundle(dir: string): Promise<{ checkpoint: string; bundle: string }> {
  const checkpoint = join(dir, 'ckpt');
  const bundle = join(dir, 'bundle');
  await makeTiny(checkpoint, { layout: 'unimoe-4e', multimodal: true, seed: 7 });
  const args = ['--vision-tower', join(checkpoint, TINY_VISION_DIR), '--speech-tower', join(checkpoint, TINY_SPEECH_DIR)];
  args.push('--audio-tower', join(checkpoint, TINY_AUDIO_DIR), '--audio-aligner', join(checkpoint, TINY_AUDIO_ALIGNER_DIR));
  const code = await convertCommand([checkpoint, bundle, '--name', MODEL, ...args, '--quiet']);
  if (code !== 0) throw new Error(`unimoe convert exited with ${code}`);
  return { checkpoint, bundle };
}

export const media = (name: string): Uint8Array => new Uint8Array(readFileSync(join(FIXTURES, 'media', name)));

/** 16-bit mono PCM WAV of a deterministic chirp with a tremolo, `seconds` long at `rate` Hz. */
export function chirpWav(seconds: number, rate = 16000): Uint8Array {
  const n = Math.round(seconds * rate);
  const out = new Uint8Array(44 + 2 * n);
  const v = new DataView(out.buffer);
  const ascii = (at: number, s: string) => [...s].forEach((c, i) => v.setUint8(at + i, c.charCodeAt(0)));
  ascii(0, 'RIFF');
  v.setUint32(4, 36 + 2 * n, true);
  ascii(8, 'WAVE');
  ascii(12, 'fmt ');
  v.setUint32(16, 16, true);
  v.setUint16(20, 1, true); // PCM
  v.setUint16(22, 1, true);
  v.setUint32(24, rate, true);
  v.setUint32(28, 2 * rate, true);
  v.setUint16(32, 2, true);
  v.setUint16(34, 16, true);
  ascii(36, 'data');
  v.setUint32(40, 2 * n, true);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const x = 0.4 * Math.sin(2 * Math.PI * (200 * t + 40 * t * t)) * (0.6 + 0.4 * Math.sin(2 * Math.PI * 3 * t));
    v.setInt16(44 + 2 * i, Math.round(x * 32767), true);
  }
  return out;
}
