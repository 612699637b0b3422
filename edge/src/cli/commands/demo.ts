/**
 * `unimoe demo`: the embedded default in one command - makes a tiny multimodal Uni-MoE 4e checkpoint and its bundle
 * under ./models (once), then serves the OpenAI-style API on 127.0.0.1 with every unit in this process.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTiny } from '@unimoe/shared/tiny/make-tiny';
import { TINY_AUDIO_ALIGNER_DIR, TINY_AUDIO_DIR, TINY_SPEECH_DIR, TINY_VISION_DIR } from '@unimoe/shared/tiny/towers';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { parseCommand } from '../args';

const USAGE = 'unimoe demo [--port 8000] [--dir ./models] [--no-serve]';

const exists = (p: string) => access(p).then(() => true, () => false);

/** Makes (once) the demo checkpoint and bundle under `dir`; returns the bundle directory. */
export async function ensureDemoBundle(dir = './models'): Promise<string> {
  const checkpoint = `${dir}/tiny-unimoe-4e`;
  const bundle = `${dir}/tiny-unimoe-4e.bundle`;
  if (!(await exists(`${bundle}/manifest.json`))) {
    if (!(await exists(`${checkpoint}/config.json`))) {
      console.error(`[demo] writing a tiny random Uni-MoE 4e checkpoint (with CLIP, Whisper and BEATs towers) to ${checkpoint}`);
      await makeTiny(checkpoint, { layout: 'unimoe-4e', seed: 1, multimodal: true });
    }
    console.error(`[demo] converting it to the bundle ${bundle}`);
    await convertCheckpoint({
      checkpointDir: checkpoint,
      bundleDir: bundle,
      dtype: 'float32',
      name: 'tiny-unimoe-4e',
      visionTower: join(checkpoint, TINY_VISION_DIR),
      speechTower: join(checkpoint, TINY_SPEECH_DIR),
      audioTower: join(checkpoint, TINY_AUDIO_DIR),
      audioAligner: join(checkpoint, TINY_AUDIO_ALIGNER_DIR),
    });
  }
  return bundle;
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, { port: { type: 'string' }, dir: { type: 'string' }, 'no-serve': { type: 'boolean' } }, USAGE);
  const bundle = await ensureDemoBundle(values.dir);
  if (values['no-serve']) {
    // Only make the bundle (e.g. Compose's one-shot job, which then uploads it): its directory on the last line.
    console.log(bundle);
    return 0;
  }
  const serve = await import('./serve');
  return serve.run([bundle, '--port', values.port ?? '8000', '--host', '127.0.0.1', '--no-auth']);
}
