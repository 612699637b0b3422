import { CliError, parseCommand, parseIds } from '../args';
import { openEngine } from '../bundle-access';

const USAGE = 'unimoe logits <bundle> --ids 1,2,3 [--nats URL]';

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand(argv, { ids: { type: 'string' }, nats: { type: 'string' } }, USAGE);
  if (positionals.length !== 1 || !values.ids) throw new CliError(`expected <bundle> and --ids\nusage: ${USAGE}`);
  const ids = parseIds(values.ids);
  const { engine, manifest } = await openEngine(positionals[0]!, { natsUrl: values.nats ?? process.env.NATS_URL });
  try {
    const bad = ids.find((id) => id >= manifest.config.vocab);
    if (bad !== undefined) throw new CliError(`--ids: token id ${bad} is outside the vocabulary (size ${manifest.config.vocab})`);
    const logits = await engine.logits(ids);
    console.log(JSON.stringify(Array.from(logits)));
  } finally {
    await engine.close();
  }
  return 0;
}
