/**
 * The edge's exposure: `serve` listens on loopback unless told otherwise, the operators' endpoints can
 * require a token and answer from a short cache, and a request's media are capped in count and bytes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cachedReadiness } from '@unimoe/edge/api/readiness';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { convertTinyBundle, MODEL } from '../api/helpers';
import { makeTempDir } from '../helpers/tmp';

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let bundle: string;
const servers: RunningServer[] = [];

beforeAll(async () => {
  tmp = await makeTempDir('edge-hardening');
  bundle = await convertTinyBundle(tmp.dir);
});
afterAll(async () => {
  for (const s of servers) await s.close();
  await tmp?.cleanup();
});

async function serve(opts: Omit<Parameters<typeof startServer>[0], 'bundle' | 'port'> = {}): Promise<RunningServer> {
  const server = await startServer({ bundle, port: 0, databaseUrl: `file:${tmp.dir}/${servers.length}.db`, ...opts, api: { noAuth: true, ...opts.api } });
  servers.push(server);
  return server;
}

/** Another loopback address: reachable when the server listens on every interface, refused when on 127.0.0.1 only. */
const reachableOn = (host: string, port: number) =>
  fetch(`http://${host}:${port}/healthz`).then(
    (r) => r.status === 200,
    () => false,
  );

describe('serve binds loopback by default', () => {
  it('listens on 127.0.0.1 only unless a host is given', async () => {
    const local = await serve();
    expect(local.url).toBe(`http://127.0.0.1:${local.port}`);
    expect(await reachableOn('127.0.0.1', local.port)).toBe(true);
    expect(await reachableOn('127.0.0.2', local.port)).toBe(false);
    const everywhere = await serve({ host: '0.0.0.0' });
    expect(await reachableOn('127.0.0.2', everywhere.port)).toBe(true);
  });
});

describe('operators endpoints', () => {
  it('METRICS_TOKEN guards /metrics and /readyz; /healthz stays open', async () => {
    const server = await serve({ api: { metricsToken: 's3cret-token' } });
    const get = (path: string, token?: string) => fetch(`${server.url}${path}`, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    for (const path of ['/metrics', '/readyz']) {
      expect((await get(path)).status).toBe(401);
      expect((await get(path, 's3cret-tokeN')).status).toBe(401);
      expect((await get(path, 's3cret')).status).toBe(401);
      expect((await get(path, 's3cret-token')).status).toBe(200);
    }
    expect(await (await get('/metrics', 's3cret-token')).text()).toContain('unimoe_');
    expect((await get('/healthz')).status).toBe(200);
  });

  it('readiness answers are reused for the cache period and concurrent probes share one check', async () => {
    let now = 0;
    let checks = 0;
    let release: (() => void) | undefined;
    const ready = cachedReadiness(
      () => {
        checks++;
        return new Promise<number>((resolve) => (release = () => resolve(checks)));
      },
      1000,
      () => now,
    );
    const concurrent = [ready(), ready(), ready()];
    release!();
    expect(await Promise.all(concurrent)).toEqual([1, 1, 1]);
    now = 999;
    expect(await ready()).toBe(1);
    now = 1000;
    const next = ready();
    release!();
    expect(await next).toBe(2);
    expect(checks).toBe(2);
  });
});

describe('per-request media caps', () => {
  const png = 'iVBORw0KGgo='; // 8 bytes: shape-valid base64; the caps apply before any decoding
  const image = { type: 'image_url', image_url: { url: `data:image/png;base64,${png}` } };
  const post = (server: RunningServer, content: unknown[]) =>
    fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: MODEL, max_tokens: 1, messages: [{ role: 'user', content }] }),
    }).then(async (r) => ({ status: r.status, error: (await r.json()).error, requestId: r.headers.get('x-request-id') }));

  it('refuses more media parts than allowed (400) and more media bytes in all than allowed (413)', async () => {
    const server = await serve({ api: { maxMediaItems: 3, maxMediaTotalBytes: 3000, maxMediaBytes: 2000 } });
    const tooMany = await post(server, [image, image, { type: 'text', text: 'hi' }, image, image]);
    expect(tooMany).toMatchObject({ status: 400, error: { code: 'too_many_media_items', param: 'messages[0].content[4]' } });
    expect(tooMany.requestId).toMatch(/^[0-9a-f-]{36}$/); // error answers carry their request id too
    const big = `data:image/png;base64,${'A'.repeat(2000)}`; // 1500 bytes each: under the per-item cap, 3000 in all after two
    const tooBig = await post(server, [{ type: 'image_url', image_url: { url: big } }, { type: 'image_url', image_url: { url: big } }, { type: 'image_url', image_url: { url: big } }]);
    expect(tooBig).toMatchObject({ status: 413, error: { code: 'media_too_large', param: 'messages[0].content[2]' } });
    // Within both caps the request gets past them (to the modality check of this text-only bundle).
    expect(await post(server, [image, image])).toMatchObject({ status: 400, error: { code: 'unsupported_modality' } });
  });
});
