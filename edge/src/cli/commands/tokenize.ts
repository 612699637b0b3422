import { readManifest } from '@unimoe/shared/bundle/load';
import { CliError, parseCommand } from '../args';
import { openTokenizer } from '../bundle-access';
import { noUnits, resolveBundle } from '../resolve-bundle';

const USAGE = 'unimoe tokenize <bundle> --text TEXT';

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand(argv, { text: { type: 'string' } }, USAGE);
  if (positionals.length !== 1 || values.text === undefined) throw new CliError(`expected <bundle> and --text\nusage: ${USAGE}`);
  const bundleDir = await resolveBundle(positionals[0]!, noUnits);
  const manifest = await readManifest(bundleDir);
  const tokenizer = await openTokenizer(bundleDir, manifest);
  console.log(JSON.stringify({ ids: [manifest.tokenizer.bos, ...tokenizer.encode(values.text)] }));
  return 0;
}
