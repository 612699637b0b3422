import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { CliError, parseCommand } from '../args';

const USAGE =
  'unimoe convert <checkpoint-dir> <bundle-dir> [--adapter <peft-dir>] [--dtype float32|float16] [--name NAME]\n' +
  '  [--vision-tower <clip-dir>] [--speech-tower <whisper-dir>] [--audio-tower <beats.pt|dir>] [--audio-aligner <checkpoint-dir>]\n' +
  '  [--tokenizer <tokenizer.model|tokenizer.json>]';

export async function run(argv: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const options = { adapter: s, dtype: s, name: s, 'vision-tower': s, 'speech-tower': s, 'audio-tower': s, 'audio-aligner': s, tokenizer: s, quiet: { type: 'boolean' } } as const;
  const { values, positionals } = parseCommand(argv, options, USAGE);
  if (positionals.length !== 2) throw new CliError(`expected <checkpoint-dir> <bundle-dir>\nusage: ${USAGE}`);
  const dtype = values.dtype ?? 'float32';
  if (dtype !== 'float32' && dtype !== 'float16') throw new CliError(`--dtype must be float32 or float16, not "${dtype}"`);
  const [checkpointDir, bundleDir] = positionals as [string, string];
  const started = performance.now();
  const manifest = await convertCheckpoint({
    checkpointDir,
    bundleDir,
    dtype,
    adapterDir: values.adapter,
    name: values.name,
    visionTower: values['vision-tower'],
    speechTower: values['speech-tower'],
    audioTower: values['audio-tower'],
    tokenizer: values.tokenizer,
    audioAligner: values['audio-aligner'],
    onProgress: values.quiet ? undefined : (msg) => console.error(msg),
  });
  for (const warning of manifest.source.warnings) console.error(`warning: ${warning}`);
  const bytes = manifest.units.reduce((sum, u) => sum + u.bytes, 0);
  console.log(
    `converted ${manifest.source.layout} checkpoint ${checkpointDir} -> ${bundleDir}: ${manifest.units.length} units, ` +
      `${(bytes / 2 ** 20).toFixed(1)} MiB ${manifest.dtype}, ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  return 0;
}
