/**
 * `unimoe serve <bundle-or-s3-uri> [--nats URL [--local-encoders]] [--port N]`: the OpenAI-style edge API.
 * With --nats, experts and modality encoders run on the pools (`unimoe worker --encoders`); with
 * --local-encoders the encoders run in this process instead.
 */
import { isEncoderKind } from '@unimoe/shared/bundle/manifest';
import { DEFAULT_API_CONFIG } from '../../api/config';
import { startServer } from '../../serve';
import { CliError, parseCommand, parseNumber } from '../args';

const USAGE =
  'unimoe serve <bundle-or-s3-uri> [--nats URL [--local-encoders]] [--port 8000] [--host 0.0.0.0] [--database-url URL] [--no-auth]\n' +
  '  [--max-tokens-cap N] [--body-limit-mb N] [--rate-limit RPM] [--max-concurrent N] [--timeout-s N] [--max-batch 16] [--prefill-chunk 128]';

export async function run(argv: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const { values, positionals } = parseCommand(
    argv,
    {
      nats: s,
      'local-encoders': { type: 'boolean' },
      port: s,
      host: s,
      'database-url': s,
      'no-auth': { type: 'boolean' },
      'max-tokens-cap': s,
      'body-limit-mb': s,
      'rate-limit': s,
      'max-concurrent': s,
      'timeout-s': s,
      'max-batch': s,
      'prefill-chunk': s,
    },
    USAGE,
  );
  if (positionals.length !== 1) throw new CliError(`expected one <bundle-or-s3-uri>\nusage: ${USAGE}`);
  const d = DEFAULT_API_CONFIG;
  const noAuth = values['no-auth'] === true;
  const natsUrl = values.nats ?? (process.env.NATS_URL || undefined);
  const localEncoders = values['local-encoders'] === true;
  if (localEncoders && !natsUrl) throw new CliError(`--local-encoders only applies with --nats (embedded mode always runs encoders in-process)\nusage: ${USAGE}`);
  const server = await startServer({
    bundle: positionals[0]!,
    natsUrl,
    localEncoders,
    port: parseNumber(values.port, '--port', 8000, { integer: true, min: 0, max: 65535 }),
    host: values.host ?? '0.0.0.0',
    databaseUrl: values['database-url'],
    engine: {
      maxBatch: parseNumber(values['max-batch'], '--max-batch', 16, { integer: true, min: 1, max: 1024 }),
      prefillChunk: parseNumber(values['prefill-chunk'], '--prefill-chunk', 128, { integer: true, min: 1, max: 8192 }),
    },
    api: {
      noAuth,
      maxTokensCap: parseNumber(values['max-tokens-cap'], '--max-tokens-cap', d.maxTokensCap, { integer: true, min: 1 }),
      bodyLimitBytes: Math.round(parseNumber(values['body-limit-mb'], '--body-limit-mb', d.bodyLimitBytes / 2 ** 20, { min: 0.001 }) * 2 ** 20),
      requestsPerMinute: parseNumber(values['rate-limit'], '--rate-limit', d.requestsPerMinute, { integer: true, min: 0 }),
      maxConcurrentPerKey: parseNumber(values['max-concurrent'], '--max-concurrent', d.maxConcurrentPerKey, { integer: true, min: 0 }),
      requestTimeoutMs: parseNumber(values['timeout-s'], '--timeout-s', d.requestTimeoutMs / 1000, { min: 0.001 }) * 1000,
    },
  });
  if (noAuth) {
    console.error('');
    console.error('!!! WARNING: --no-auth: this server accepts requests WITHOUT an API key. !!!');
    console.error('!!! Anyone who can reach it can use it. Use this for local development only. !!!');
    console.error('');
  }
  const hasEncoders = server.manifest.units.some((u) => isEncoderKind(u.kind));
  const encoders = !hasEncoders ? '' : localEncoders ? ', encoders in-process' : ', encoders on NATS pools';
  const mode = natsUrl ? `experts on NATS pools (${natsUrl})${encoders}` : 'all units in-process';
  console.error(`[serve] ${server.manifest.name}: ${mode}`);
  console.log(`listening on ${server.url}  (POST /v1/chat/completions, GET /v1/models, /healthz, /readyz, /metrics)`);

  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      console.error(`[serve] ${signal}: shutting down`);
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  await server.close();
  return 0;
}
