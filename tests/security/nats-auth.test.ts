/**
 * `unimoe nats-auth` against a real nats-server with its generated config and mutual TLS from a test CA:
 * every role can do its job (split generation numbers equal the in-process units, the autoscaler sees
 * stats), and nothing more: a worker of pool a cannot take pool b's requests nor send requests as the
 * edge, the autoscaler cannot publish, and clients without nkey or client certificate are refused.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNatsExpertBackend, type NatsExpertBackend } from '@unimoe/edge/dispatch/nats-expert-backend';
import { LocalExpertBackend } from '@unimoe/edge/engine/local-experts';
import { connectNats } from '@unimoe/shared/runtime/nats-connect';
import { natsAuthOptions, type NatsSecurity } from '@unimoe/shared/runtime/nats-auth';
import { statsSubject, unitSubject, wireModel } from '@unimoe/shared/wire/subjects';
import { runWorker, type RunningWorker } from '@unimoe/gpu-worker/worker';
import { cli } from '../helpers/cli';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { makeTempDir } from '../helpers/tmp';
import { referenceRows, spawnWorker, tinyBundle, waitFor } from '../split/cluster';
import { makeTestPki, type TestPki } from './tls-ca';

const quiet = () => {};

describe('per-role NATS permissions with nkeys and mutual TLS', () => {
  let bundle: Awaited<ReturnType<typeof tinyBundle>>;
  let tmp: Awaited<ReturnType<typeof makeTempDir>>;
  let pki: TestPki;
  let nats: NatsServer;
  let out: string;
  const workers: RunningWorker[] = [];
  const conns: NatsConnection[] = [];
  let edge: NatsExpertBackend | undefined;

  const as = (role: string, tls: Partial<NatsSecurity['tls']> = {}): NatsSecurity => ({
    nkeySeed: join(out, `${role}.nk`),
    tls: { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey, ...tls },
  });
  const connectAs = async (role: string) => {
    const nc = await connectNats(nats.url, `test-${role}`, { security: as(role) });
    conns.push(nc);
    return nc;
  };

  beforeAll(async () => {
    bundle = await tinyBundle();
    tmp = await makeTempDir('nats-auth');
    pki = makeTestPki(tmp.dir);
    out = join(tmp.dir, 'auth');
    const made = await cli(['nats-auth', bundle.dir, '--out', out, '--pool', 'a=0-1', '--pool', 'b=2-3', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-ca', pki.ca]);
    expect(made.code, made.stderr).toBe(0);
    expect(made.lastLine).toBe(join(out, 'nats-server.conf'));
    nats = await startNatsServer({ config: await readFile(join(out, 'nats-server.conf'), 'utf8') });
  });
  afterAll(async () => {
    await edge?.close();
    for (const nc of conns) await nc.close();
    for (const w of workers) await w.stop();
    await nats?.stop();
    await tmp?.cleanup();
    await bundle?.cleanup();
  });

  it('writes one seed per role, readable by its owner only', async () => {
    const { stat } = await import('node:fs/promises');
    for (const role of ['edge', 'autoscaler', 'worker-a', 'worker-b']) {
      const info = await stat(join(out, `${role}.nk`));
      expect(info.mode & 0o777).toBe(0o600);
      expect((await readFile(join(out, `${role}.nk`), 'utf8')).trim()).toMatch(/^SU[A-Z2-7]{56}$/);
    }
    const conf = await readFile(join(out, 'nats-server.conf'), 'utf8');
    expect(conf).toContain(unitSubject(wireModel(bundle.manifest), 'layer1.expert3'));
    expect(conf).toContain('verify: true');
  });

  it('edge, both pools and the autoscaler do their jobs: split outputs equal the in-process units', async () => {
    const { manifest } = bundle;
    workers.push(await runWorker({ store: bundle.dir, pool: 'a', experts: [0, 1], natsUrl: nats.url, natsSecurity: as('worker-a'), threads: 1, statsIntervalMs: 200, log: quiet }));
    workers.push(await runWorker({ store: bundle.dir, pool: 'b', experts: [2, 3], natsUrl: nats.url, natsSecurity: as('worker-b'), threads: 1, statsIntervalMs: 200, log: quiet }));
    const autoscaler = await connectAs('autoscaler');
    const pools = new Set<string>();
    autoscaler.subscribe(`${statsSubject(wireModel(manifest), 'x').slice(0, -2)}.>`, { callback: (_e, m) => pools.add(m.json<{ pool: string }>().pool) });
    edge = await createNatsExpertBackend({ natsUrl: nats.url, natsSecurity: as('edge'), model: wireModel(manifest), hidden: manifest.config.hidden });
    const local = await LocalExpertBackend.open(bundle.dir, {}, manifest);
    try {
      const { x } = referenceRows(4);
      const batches = [0, 1].flatMap((layer) => [0, 1, 2, 3].map((expert) => ({ layer, expert, x, tokens: 4 })));
      const [got, want] = [await edge.runExperts(batches), await local.runExperts(batches)];
      got.forEach((y, i) => expect(Array.from(y)).toEqual(Array.from(want[i]!)));
    } finally {
      await local.close();
    }
    await waitFor(() => pools.has('a') && pools.has('b'));
  });

  it('a worker of pool a cannot subscribe to pool b units or publish requests as the edge', async () => {
    const wire = wireModel(bundle.manifest);
    const workerA = await connectAs('worker-a');
    const denied: string[] = [];
    workerA.subscribe(unitSubject(wire, 'layer0.expert2'), { callback: (err) => err && denied.push(err.message) });
    await waitFor(() => denied.length > 0);
    expect(denied[0]).toMatch(/permissions violation/i);

    // A subscriber pool a may have: it must not see a request that pool b's credentials try to send to a's unit.
    const seen: string[] = [];
    workerA.subscribe(unitSubject(wire, 'layer0.expert0'), { callback: (_e, m) => seen.push(m.subject) });
    await workerA.flush();
    const workerB = await connectAs('worker-b');
    const errors: string[] = [];
    void (async () => {
      for await (const s of workerB.status()) if (s.type === 'error') errors.push(String(s.data));
    })();
    workerB.publish(unitSubject(wire, 'layer0.expert0'), new Uint8Array(4));
    await workerB.flush();
    await waitFor(() => errors.length > 0);
    await workerA.flush();
    expect(seen).toEqual([]);
    expect(errors.join(' ')).toMatch(/permissions/i);
  });

  it('`unimoe worker` takes its nkey and TLS files as flags, and refuses to join without credentials', async () => {
    const tlsFlags = ['--nats-tls-ca', pki.ca, '--nats-tls-cert', pki.clientCert, '--nats-tls-key', pki.clientKey];
    const args = [bundle.dir, '--pool', 'b', '--experts', '2-3', '--nats', nats.url, ...tlsFlags];
    const joined = spawnWorker([...args, '--nats-nkey-seed', join(out, 'worker-b.nk')]);
    await joined.ready; // it logged that it joined with its units: the server took its nkey and certificate
    // SIGKILL: a SIGTERM right at the join line can beat the CLI's signal handlers (a start-up race of the worker CLI).
    joined.child.kill('SIGKILL');
    await joined.exited;
    const refused = await spawnWorker(args).exited;
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/refusing to join pool b: cannot connect to NATS at .*authorization violation/i);
  });

  it('the autoscaler cannot publish anything', async () => {
    const autoscaler = await connectAs('autoscaler');
    const errors: string[] = [];
    void (async () => {
      for await (const s of autoscaler.status()) if (s.type === 'error') errors.push(String(s.data));
    })();
    autoscaler.publish(unitSubject(wireModel(bundle.manifest), 'layer0.expert0'), new Uint8Array(4));
    await waitFor(() => errors.length > 0);
    expect(errors.join(' ')).toMatch(/permissions/i);
  });

  it('refuses clients without an nkey, with an unknown nkey or without a client certificate', async () => {
    const tlsOnly: NatsSecurity = { tls: { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey } };
    await expect(connectNats(nats.url, 'anon', { security: tlsOnly })).rejects.toThrow(/authorization/i);
    const { nkeys } = await import('nats');
    const stranger = new TextDecoder().decode(nkeys.createUser().getSeed());
    await expect(connectNats(nats.url, 'stranger', { security: { ...tlsOnly, nkeySeed: stranger } })).rejects.toThrow(/authorization/i);
    // The server drops a TLS client without a certificate during the handshake; the same client with its certificate gets in.
    const viaTls = (tls: NatsSecurity['tls']) => connect({ servers: nats.url, timeout: 3000, ...natsAuthOptions({ nkeySeed: join(out, 'edge.nk'), tls }) });
    await expect(viaTls({ ca: pki.ca })).rejects.toThrow();
    const withCert = await viaTls({ ca: pki.ca, cert: pki.clientCert, key: pki.clientKey });
    await withCert.close();
    await expect(connectNats(nats.url, 'bad-file', { security: { nkeySeed: join(out, 'missing.nk') } })).rejects.toThrow(/missing\.nk: cannot read it \(ENOENT\)/);
  });
});

describe('credentials from the environment', () => {
  it('user/password and token from NATS_USER/NATS_PASSWORD and NATS_TOKEN reach a server that requires them', async () => {
    const { natsSecurityFromEnv, natsSecurityFromFlags } = await import('@unimoe/shared/runtime/nats-auth');
    for (const [config, env] of [
      ['authorization { users: [ { user: "edge", password: "s3cret" } ] }\n', { NATS_USER: 'edge', NATS_PASSWORD: 's3cret' }],
      ['authorization { token: "t0ken" }\n', { NATS_TOKEN: 't0ken' }],
    ] as const) {
      const server = await startNatsServer({ config });
      try {
        const nc = await connectNats(server.url, 'env', { security: natsSecurityFromEnv(env) });
        await nc.close();
        await expect(connectNats(server.url, 'none', { security: {} })).rejects.toThrow(/authorization/i);
      } finally {
        await server.stop();
      }
    }
    // Flags name files and take precedence over the environment; two kinds of credentials at once are refused.
    expect(natsSecurityFromFlags({ 'nats-tls-ca': '/f/ca.pem' }, { NATS_TLS_CA: '/e/ca.pem', NATS_TLS_CERT: '/e/c.pem' }).tls).toEqual({ ca: '/f/ca.pem', cert: '/e/c.pem' });
    expect(() => natsAuthOptions({ token: 'x', user: 'u' })).toThrow(/not user and token/);
    expect(() => natsAuthOptions({ tls: { cert: '/c.pem' } })).toThrow(/needs its key/);
  });
});

describe('an encoder pool under the generated permissions', () => {
  it("an image larger than max_payload travels in parts: the worker fetches them from the edge's inbox", async () => {
    const { buildMultimodalBundle } = await import('../multimodal/setup');
    const { readManifest } = await import('@unimoe/shared/bundle/load');
    const { createNatsEncoderBackend } = await import('@unimoe/edge/dispatch/nats-encoder-backend');
    const { LocalEncoderBackend } = await import('@unimoe/edge/engine/local-encoders');
    const tmp = await makeTempDir('nats-auth-enc');
    let server: NatsServer | undefined;
    let worker: RunningWorker | undefined;
    try {
      const { bundle } = await buildMultimodalBundle(tmp.dir);
      const manifest = await readManifest(bundle);
      const out = join(tmp.dir, 'auth');
      const made = await cli(['nats-auth', bundle, '--out', out, '--pool', 'enc=vision']);
      expect(made.code, made.stderr).toBe(0);
      server = await startNatsServer({ config: await readFile(join(out, 'nats-server.conf'), 'utf8') });
      worker = await runWorker({ store: bundle, pool: 'enc', encoders: ['vision'], natsUrl: server.url, natsSecurity: { nkeySeed: join(out, 'worker-enc.nk') }, threads: 1, log: quiet });
      const edge = await createNatsEncoderBackend({ natsUrl: server.url, manifest, natsSecurity: { nkeySeed: join(out, 'edge.nk') } });
      const local = await LocalEncoderBackend.open(bundle, manifest);
      try {
        const pixels = { data: Float32Array.from({ length: 3 * 336 * 336 }, (_, i) => Math.sin(i) * 0.5), dims: [1, 3, 336, 336] };
        expect(pixels.data.byteLength).toBeGreaterThan(1 << 20); // above the default max_payload: sent in parts
        const [remote, want] = [await edge.encode('vision.encoder', pixels), await local.encode('vision.encoder', pixels)];
        expect(remote.dims).toEqual(want.dims);
        expect(Array.from(remote.data)).toEqual(Array.from(want.data));
      } finally {
        await edge.close();
        await local.close();
      }
    } finally {
      await worker?.stop();
      await server?.stop();
      await tmp.cleanup();
    }
  });
});
