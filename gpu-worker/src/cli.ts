/**
 * `unimoe worker <bundle-dir|s3://bucket/prefix> --pool NAME [--experts LIST [--layers LIST]] [--encoders vision,speech,audio] --nats URL`
 * One replica of a pool (experts, modality encoders or both); runs until SIGTERM/SIGINT, then drains and exits 0
 * (within --drain-timeout, default 10 s, even when NATS is unreachable).
 */
import { parseArgs } from 'node:util';
import { parseIndexList } from '@unimoe/shared/index-list';
import { parseEncoderList } from './units';
import { runWorker } from './worker';
import { log } from '@unimoe/shared/log';
import { NATS_SECURITY_FLAGS, natsSecurityFromFlags } from '@unimoe/shared/runtime/nats-auth';

const USAGE =
  'usage: unimoe worker <bundle-dir|s3://bucket/prefix> --pool NAME [--experts LIST [--layers LIST]] [--encoders vision,speech,audio]\n' +
  '       [--nats URL] [--nats-creds FILE | --nats-nkey-seed FILE] [--nats-tls-ca FILE [--nats-tls-cert FILE --nats-tls-key FILE]]\n' +
  '       [--replica ID] [--stats-interval MS] [--stats-window MS] [--threads N] [--drain-timeout MS]   (LIST like 0-3 or 0,2,5; at least one of --experts and\n' +
  '       --encoders; --nats defaults to NATS_URL)';

/** Resolves to the process exit code: 0 after a clean drain, 1 when the worker cannot start or loses NATS, 2 on usage errors. */
export async function workerCommand(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        pool: { type: 'string' },
        experts: { type: 'string' },
        encoders: { type: 'string' },
        layers: { type: 'string' },
        nats: { type: 'string' },
        replica: { type: 'string' },
        'stats-interval': { type: 'string' },
        'stats-window': { type: 'string' },
        threads: { type: 'string' },
        ...NATS_SECURITY_FLAGS,
        'drain-timeout': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    console.error(`unimoe worker: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const natsUrl = values.nats ?? process.env.NATS_URL;
  let options;
  try {
    if (positionals.length !== 1) throw new Error(`expected one bundle directory or s3:// URI, got ${positionals.length}`);
    if (!values.pool) throw new Error('--pool NAME is required');
    if (!values.experts && !values.encoders) throw new Error('--experts LIST or --encoders LIST (or both) is required');
    if (values.layers !== undefined && !values.experts) throw new Error('--layers needs --experts');
    if (!natsUrl) throw new Error('--nats URL (or NATS_URL) is required');
    options = {
      store: positionals[0],
      pool: values.pool,
      experts: values.experts === undefined ? undefined : parseIndexList(values.experts, '--experts'),
      encoders: values.encoders === undefined ? undefined : parseEncoderList(values.encoders),
      layers: values.layers === undefined ? undefined : parseIndexList(values.layers, '--layers'),
      natsUrl,
      natsSecurity: natsSecurityFromFlags(values),
      replica: values.replica,
      statsIntervalMs: positiveInt(values['stats-interval'], '--stats-interval'),
      statsWindowMs: positiveInt(values['stats-window'], '--stats-window'),
      threads: positiveInt(values.threads, '--threads'),
      drainTimeoutMs: positiveInt(values['drain-timeout'], '--drain-timeout'),
    };
  } catch (err) {
    console.error(`unimoe worker: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }

  // Handlers go in before joining: a signal that lands while the worker joins (even right at its
  // "joined" line) stops it by draining once it has joined, instead of killing it mid-join.
  let worker: Awaited<ReturnType<typeof runWorker>> | undefined;
  let stopAsked: string | undefined;
  const onSignal = (sig: string) => {
    stopAsked = sig;
    if (!worker) return;
    log.info(`${sig}: draining`);
    void worker.stop();
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  try {
    worker = await runWorker(options);
  } catch (err) {
    console.error(`unimoe worker: refusing to join pool ${options.pool}: ${(err as Error).message}`);
    return 1;
  }
  if (stopAsked) onSignal(stopAsked);
  const lost = await worker.closed;
  if (lost) {
    console.error(`unimoe worker: pool ${options.pool} replica ${worker.replica} lost NATS: ${lost.message}`);
    return 1;
  }
  return 0;
}

function positiveInt(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${flag} must be a positive integer, got ${JSON.stringify(text)}`);
  return n;
}
