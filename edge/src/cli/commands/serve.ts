/**
 * `unimoe serve <bundle-or-s3-uri> [--nats URL [--local-encoders]] [--port N]`: the OpenAI-style edge API.
 * With --nats, experts and modality encoders run on the pools (`unimoe worker --encoders`); with
 * --local-encoders the encoders run in this process instead. With --engine-nats, generations run on the
 * engine tier (`unimoe engine`) and the bundle only gives the manifest and tokenizer (or --model NAME
 * discovers them from an engine).
 */
import { log } from '@unimoe/shared/log';
import { isEncoderKind } from '@unimoe/shared/bundle/manifest';
import { DEFAULT_API_CONFIG } from '../../api/config';
import { startEngineTierServer, startServer } from '../../serve';
import { CliError, parseCommand, parseNumber } from '../args';
import { ENGINE_FLAG_NAMES, engineOptionsFromFlags } from '../engine-flags';
import { NATS_SECURITY_FLAGS, natsSecurityFromFlags } from '@unimoe/shared/runtime/nats-auth';

const USAGE =
  'unimoe serve <bundle-or-s3-uri> [--nats URL [--local-encoders]] [--port 8000] [--host 127.0.0.1] [--database-url URL] [--no-auth]\n' +
  '  | unimoe serve [<bundle-or-s3-uri> | --model NAME] --engine-nats URL [--engine-accept-timeout-s 10] (generations on the engine tier)\n' +
  '  [--nats-creds FILE | --nats-nkey-seed FILE] [--nats-tls-ca FILE [--nats-tls-cert FILE --nats-tls-key FILE]]\n' +
  '  [--max-tokens-cap N] [--body-limit-mb N] [--rate-limit RPM] [--max-concurrent N] [--max-media-items N] [--timeout-s N] [--max-batch 16] [--prefill-chunk 128]\n' +
  '  [--max-queue 256] [--kv-budget-mb N] [--prefix-cache-mb 512] [--drain-s 30]\n' +
  '  [--scale-from-zero-s N]   (split mode: hold requests for units with no replica up to N s while the autoscaler starts one)';

export async function run(argv: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const { values, positionals } = parseCommand(
    argv,
    {
      nats: s,
      'engine-nats': s,
      model: s,
      'engine-accept-timeout-s': s,
      'local-encoders': { type: 'boolean' },
      port: s,
      host: s,
      'database-url': s,
      'no-auth': { type: 'boolean' },
      'max-tokens-cap': s,
      'body-limit-mb': s,
      'rate-limit': s,
      'max-concurrent': s,
      'max-media-items': s,
      'timeout-s': s,
      'max-batch': s,
      'prefill-chunk': s,
      ...NATS_SECURITY_FLAGS,
      'max-queue': s,
      'kv-budget-mb': s,
      'prefix-cache-mb': s,
      'drain-s': s,
      'scale-from-zero-s': s,
    },
    USAGE,
  );
  const engineNats = values['engine-nats'];
  if (engineNats) {
    for (const flag of ['nats', 'local-encoders', ...ENGINE_FLAG_NAMES, 'scale-from-zero-s'] as const) {
      if (values[flag] !== undefined) throw new CliError(`--${flag} does not apply with --engine-nats (give it to \`unimoe engine\`)\nusage: ${USAGE}`);
    }
    if (positionals.length > 1 || (positionals.length === 0 && !values.model)) throw new CliError(`expected the <bundle-or-s3-uri> or --model NAME\nusage: ${USAGE}`);
  } else {
    if (positionals.length !== 1) throw new CliError(`expected one <bundle-or-s3-uri>\nusage: ${USAGE}`);
    if (values.model !== undefined || values['engine-accept-timeout-s'] !== undefined) throw new CliError(`--model and --engine-accept-timeout-s apply with --engine-nats only\nusage: ${USAGE}`);
  }
  const d = DEFAULT_API_CONFIG;
  const noAuth = values['no-auth'] === true;
  const natsUrl = engineNats ? undefined : (values.nats ?? (process.env.NATS_URL || undefined));
  const localEncoders = values['local-encoders'] === true;
  if (localEncoders && !natsUrl) throw new CliError(`--local-encoders only applies with --nats (embedded mode always runs encoders in-process)\nusage: ${USAGE}`);
  const common = {
    natsSecurity: natsSecurityFromFlags(values),
    port: parseNumber(values.port, '--port', 8000, { integer: true, min: 0, max: 65535 }),
    host: values.host,
    databaseUrl: values['database-url'],
    drainMs: parseNumber(values['drain-s'], '--drain-s', 30, { min: 0 }) * 1000,
    api: {
      noAuth,
      maxTokensCap: parseNumber(values['max-tokens-cap'], '--max-tokens-cap', d.maxTokensCap, { integer: true, min: 1 }),
      bodyLimitBytes: Math.round(parseNumber(values['body-limit-mb'], '--body-limit-mb', d.bodyLimitBytes / 2 ** 20, { min: 0.001 }) * 2 ** 20),
      requestsPerMinute: parseNumber(values['rate-limit'], '--rate-limit', d.requestsPerMinute, { integer: true, min: 0 }),
      maxConcurrentPerKey: parseNumber(values['max-concurrent'], '--max-concurrent', d.maxConcurrentPerKey, { integer: true, min: 0 }),
      maxMediaItems: parseNumber(values['max-media-items'], '--max-media-items', d.maxMediaItems, { integer: true, min: 0 }),
      metricsToken: process.env.METRICS_TOKEN || undefined,
      requestTimeoutMs: parseNumber(values['timeout-s'], '--timeout-s', d.requestTimeoutMs / 1000, { min: 0.001 }) * 1000,
    },
  };
  const server = engineNats
    ? await startEngineTierServer({
        ...common,
        engineNatsUrl: engineNats,
        ...(positionals[0] ? { bundle: positionals[0] } : {}),
        ...(values.model ? { model: values.model } : {}),
        acceptTimeoutMs: parseNumber(values['engine-accept-timeout-s'], '--engine-accept-timeout-s', 10, { min: 0.001 }) * 1000,
      })
    : await startServer({
        ...common,
        bundle: positionals[0]!,
        natsUrl,
        localEncoders,
        scaleFromZeroMs: parseNumber(values['scale-from-zero-s'], '--scale-from-zero-s', 0, { min: 0 }) * 1000,
        engine: engineOptionsFromFlags(values),
      });
  if (noAuth) {
    console.error('');
    console.error('!!! WARNING: --no-auth: this server accepts requests WITHOUT an API key. !!!');
    console.error('!!! Anyone who can reach it can use it. Use this for local development only. !!!');
    console.error('');
  }
  const hasEncoders = server.manifest.units.some((u) => isEncoderKind(u.kind));
  const encoders = !hasEncoders ? '' : localEncoders ? ', encoders in-process' : ', encoders on NATS pools';
  const mode = engineNats ? `generations on the engine tier (${engineNats})` : natsUrl ? `experts on NATS pools (${natsUrl})${encoders}` : 'all units in-process';
  log.info({ model: server.manifest.name, url: server.url }, `serving ${server.manifest.name}: ${mode}`);
  console.log(`listening on ${server.url}  (POST /v1/chat/completions, GET /v1/models, /healthz, /readyz, /metrics)`);

  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info(`${signal}: not ready, finishing the requests in flight, then exiting (again to stop at once)`);
      // A second signal stops at once (the default action, since these handlers ran once).
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  await server.shutdown();
  console.error('[serve] stopped');
  return 0;
}
