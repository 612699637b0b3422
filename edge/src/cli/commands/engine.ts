/**
 * `unimoe engine <bundle-or-s3-uri> --nats URL [--pools [--local-encoders]]`: one engine of the engine
 * tier (docs/workers.md). Edges (`serve --engine-nats`, the Worker) send it prepared requests over NATS;
 * with --pools its experts (and encoders) run on the pools of that NATS server, else in this process.
 */
import { log } from '@unimoe/shared/log';
import { NATS_SECURITY_FLAGS, natsSecurityFromFlags } from '@unimoe/shared/runtime/nats-auth';
import { startEngineService } from '../../engine-service/service';
import { CliError, parseCommand, parseNumber } from '../args';
import { engineOptionsFromFlags } from '../engine-flags';

const USAGE =
  'unimoe engine <bundle-or-s3-uri> --nats URL [--pools [--local-encoders]] [--id NAME]\n' +
  '  [--nats-creds FILE | --nats-nkey-seed FILE] [--nats-tls-ca FILE [--nats-tls-cert FILE --nats-tls-key FILE]]\n' +
  '  [--max-batch 16] [--prefill-chunk 128] [--max-queue 256] [--kv-budget-mb N] [--prefix-cache-mb 512] [--drain-s 30] [--heartbeat-ms 1000]\n' +
  '  [--scale-from-zero-s N]   (with --pools: hold batches for units with no replica up to N s)';

export async function run(argv: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const { values, positionals } = parseCommand(
    argv,
    {
      nats: s,
      pools: { type: 'boolean' },
      'local-encoders': { type: 'boolean' },
      id: s,
      'max-batch': s,
      'prefill-chunk': s,
      'max-queue': s,
      'kv-budget-mb': s,
      'prefix-cache-mb': s,
      'drain-s': s,
      'heartbeat-ms': s,
      'scale-from-zero-s': s,
      ...NATS_SECURITY_FLAGS,
    },
    USAGE,
  );
  if (positionals.length !== 1) throw new CliError(`expected one <bundle-or-s3-uri>\nusage: ${USAGE}`);
  const natsUrl = values.nats ?? (process.env.NATS_URL || undefined);
  if (!natsUrl) throw new CliError(`--nats URL is required (the engine tier's NATS server)\nusage: ${USAGE}`);
  const pools = values.pools === true;
  if (values['local-encoders'] && !pools) throw new CliError(`--local-encoders only applies with --pools\nusage: ${USAGE}`);
  if (values.id !== undefined && !/^[A-Za-z0-9_-]{1,64}$/.test(values.id)) throw new CliError(`--id ${JSON.stringify(values.id)}: letters, digits, '_' and '-' only`);
  const service = await startEngineService({
    bundle: positionals[0]!,
    natsUrl,
    natsSecurity: natsSecurityFromFlags(values),
    ...(pools ? { poolsNatsUrl: natsUrl } : {}),
    localEncoders: values['local-encoders'] === true,
    ...(values.id ? { id: values.id } : {}),
    engine: engineOptionsFromFlags(values),
    drainMs: parseNumber(values['drain-s'], '--drain-s', 30, { min: 0 }) * 1000,
    heartbeatMs: parseNumber(values['heartbeat-ms'], '--heartbeat-ms', 1000, { integer: true, min: 10, max: 60_000 }),
    scaleFromZeroMs: parseNumber(values['scale-from-zero-s'], '--scale-from-zero-s', 0, { min: 0 }) * 1000,
  });
  const where = pools ? `experts on NATS pools${values['local-encoders'] ? ', encoders in-process' : ''}` : 'all units in-process';
  log.info({ model: service.manifest.name, engine: service.id }, `engine ${service.id} serving ${service.manifest.name} on ${natsUrl}: ${where}`);
  // The line tests and scripts wait for.
  console.log(`engine ${service.id} ready (${service.manifest.name} on ${natsUrl})`);

  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info(`${signal}: leaving the queue group, finishing the requests in flight, then exiting (again to stop at once)`);
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  await service.stop();
  console.error('[engine] stopped');
  return 0;
}
