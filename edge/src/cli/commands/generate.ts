import { buildPrompt, encodePrompt } from '@unimoe/shared/tokenizer/index';
import { CliError, parseCommand, parseIds, parseNumber } from '../args';
import { openEngine, openTokenizer } from '../bundle-access';

const USAGE =
  'unimoe generate <bundle> (--ids 1,2,3 | --prompt TEXT [--chat]) --max-tokens N [--temperature T] [--top-p P] [--top-k K] [--seed S] [--json] [--nats URL]';

export async function run(argv: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const { values, positionals } = parseCommand(
    argv,
    { ids: s, prompt: s, chat: { type: 'boolean' }, 'max-tokens': s, temperature: s, 'top-p': s, 'top-k': s, seed: s, json: { type: 'boolean' }, nats: s },
    USAGE,
  );
  if (positionals.length !== 1) throw new CliError(`expected one <bundle>\nusage: ${USAGE}`);
  if ((values.ids === undefined) === (values.prompt === undefined)) throw new CliError(`give exactly one of --ids and --prompt\nusage: ${USAGE}`);
  const params = {
    maxTokens: parseNumber(values['max-tokens'], '--max-tokens', 16, { integer: true, min: 1 }),
    temperature: parseNumber(values.temperature, '--temperature', 0, { min: 0 }),
    topP: parseNumber(values['top-p'], '--top-p', 1, { min: 0, max: 1 }),
    topK: parseNumber(values['top-k'], '--top-k', 0, { integer: true, min: 0 }),
    seed: values.seed === undefined ? undefined : parseNumber(values.seed, '--seed', 0, { integer: true, min: 0 }),
  };
  const { engine, manifest, bundleDir } = await openEngine(positionals[0]!, { natsUrl: values.nats ?? process.env.NATS_URL });
  try {
    const tokenizer = await openTokenizer(bundleDir, manifest);
    let promptIds: number[];
    if (values.ids !== undefined) {
      promptIds = parseIds(values.ids);
      const bad = promptIds.find((id) => id >= manifest.config.vocab);
      if (bad !== undefined) throw new CliError(`--ids: token id ${bad} is outside the vocabulary (size ${manifest.config.vocab})`);
    } else if (values.chat) {
      const { bos, eos } = manifest.tokenizer;
      promptIds = encodePrompt({ encode: (t) => tokenizer.encode(t), bos, eos }, buildPrompt([{ role: 'user', content: values.prompt! }])).ids;
    } else {
      promptIds = [manifest.tokenizer.bos, ...tokenizer.encode(values.prompt!)];
    }
    const stream = tokenizer.streamDecoder();
    const result = await engine.generate({
      promptIds,
      params,
      onToken: values.json ? undefined : (id) => void process.stdout.write(stream.push(id)),
    });
    const text = tokenizer.decode(result.ids);
    if (values.json) console.log(JSON.stringify({ ids: result.ids, text }));
    else process.stdout.write(`${stream.flush()}\n[${result.completionTokens} tokens, finish_reason ${result.finishReason}]\n`);
  } finally {
    await engine.close();
  }
  return 0;
}
