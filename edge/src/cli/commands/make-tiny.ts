import { makeTiny } from '@unimoe/shared/tiny/make-tiny';
import type { Layout } from '@unimoe/shared/model/config';
import { CliError, parseCommand, parseNumber } from '../args';

const USAGE = 'unimoe make-tiny <checkpoint-dir> --layout unimoe-4e|unimoe-8e|mixtral [--seed N] [--hidden N --layers N --heads N --kv-heads N --intermediate N --experts N --vocab N]';
const LAYOUTS: Layout[] = ['unimoe-4e', 'unimoe-8e', 'mixtral'];

export async function run(argv: string[]): Promise<number> {
  const int = { type: 'string' } as const;
  const { values, positionals } = parseCommand(
    argv,
    { layout: { type: 'string' }, seed: int, hidden: int, layers: int, heads: int, 'kv-heads': int, intermediate: int, experts: int, vocab: int, shards: int },
    USAGE,
  );
  const [dir] = positionals;
  if (!dir || positionals.length > 1) throw new CliError(`expected one checkpoint directory\nusage: ${USAGE}`);
  const layout = values.layout as Layout;
  if (!LAYOUTS.includes(layout)) throw new CliError(`--layout must be one of ${LAYOUTS.join(', ')}\nusage: ${USAGE}`);
  const n = (flag: keyof typeof values) => (values[flag] === undefined ? undefined : parseNumber(values[flag] as string, `--${flag}`, 0, { integer: true, min: 1 }));
  const { dims, files } = await makeTiny(dir, {
    layout,
    seed: values.seed === undefined ? 0 : parseNumber(values.seed, '--seed', 0, { integer: true, min: 0 }),
    hidden: n('hidden'),
    layers: n('layers'),
    heads: n('heads'),
    kvHeads: n('kv-heads'),
    intermediate: n('intermediate'),
    experts: n('experts'),
    vocab: n('vocab'),
    shards: n('shards'),
  });
  console.log(`wrote ${layout} checkpoint to ${dir}: ${files.length} weight file(s), ${JSON.stringify(dims)}`);
  return 0;
}
