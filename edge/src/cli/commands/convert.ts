import { QUANT_BLOCK_SIZES, type QuantDType } from '@unimoe/shared/bundle/manifest';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { ACCURACY_LEVEL, ACCURACY_LEVELS, DEFAULT_BLOCK_SIZE } from '@unimoe/shared/convert/quantize';
import { CliError, parseCommand } from '../args';

const USAGE =
  'unimoe convert <checkpoint-dir> <bundle-dir> [--adapter <peft-dir>] [--dtype float32|float16] [--quant int8|int4 [--block-size N] [--accuracy-level 0-4]]\n' +
  '  [--name NAME] [--vision-tower <clip-dir>] [--speech-tower <whisper-dir>] [--audio-tower <beats.pt|dir>] [--audio-aligner <checkpoint-dir>]\n' +
  '  [--tokenizer <tokenizer.model|tokenizer.json>]';

export async function run(argv: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const options = { adapter: s, dtype: s, quant: s, 'block-size': s, 'accuracy-level': s, name: s, 'vision-tower': s, 'speech-tower': s, 'audio-tower': s, 'audio-aligner': s, tokenizer: s, quiet: { type: 'boolean' } } as const;
  const { values, positionals } = parseCommand(argv, options, USAGE);
  if (positionals.length !== 2) throw new CliError(`expected <checkpoint-dir> <bundle-dir>\nusage: ${USAGE}`);
  const dtype = values.dtype;
  if (dtype !== undefined && dtype !== 'float32' && dtype !== 'float16') throw new CliError(`--dtype must be float32 or float16, not "${dtype}"`);
  const quant = parseQuant(values.quant, values['block-size'], values['accuracy-level']);
  const [checkpointDir, bundleDir] = positionals as [string, string];
  const started = performance.now();
  const manifest = await convertCheckpoint({
    checkpointDir,
    bundleDir,
    dtype,
    quant,
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
      `${(bytes / 2 ** 20).toFixed(1)} MiB ${manifest.quant ? `${manifest.quant.dtype} (block ${manifest.quant.blockSize}) + ` : ''}${manifest.dtype}, ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  return 0;
}

function parseQuant(quant: string | undefined, blockSize: string | undefined, accuracy: string | undefined) {
  if (quant === undefined) {
    if (blockSize !== undefined || accuracy !== undefined) throw new CliError('--block-size and --accuracy-level only apply with --quant int8|int4');
    return undefined;
  }
  if (quant !== 'int8' && quant !== 'int4') throw new CliError(`--quant must be int8 or int4, not "${quant}"`);
  const size = blockSize === undefined ? DEFAULT_BLOCK_SIZE : Number(blockSize);
  if (!(QUANT_BLOCK_SIZES as readonly number[]).includes(size)) {
    throw new CliError(`--block-size must be one of ${QUANT_BLOCK_SIZES.join(', ')}, not "${blockSize}"`);
  }
  const accuracyLevel = accuracy === undefined ? ACCURACY_LEVEL : Number(accuracy);
  if (!ACCURACY_LEVELS.includes(accuracyLevel)) throw new CliError(`--accuracy-level must be one of ${ACCURACY_LEVELS.join(', ')}, not "${accuracy}"`);
  return { dtype: quant as QuantDType, blockSize: size, accuracyLevel };
}
