/**
 * `unimoe autoscale <bundle-or-s3-uri> --nats URL --driver process|docker --pool NAME=EXPERTS[@LAYERS] ...`:
 * the expert-pool autoscaler (edge/src/autoscale/, docs/autoscale.md). Runs until SIGINT/SIGTERM;
 * the replicas it started keep serving after it exits (a restarted controller adopts them).
 */
import { wireModel } from '@unimoe/shared/wire/subjects';
import { createServer, type Server } from 'node:http';
import { resolve } from 'node:path';
import { readManifest } from '@unimoe/shared/bundle/load';
import { Controller } from '../../autoscale/controller';
import type { Driver } from '../../autoscale/drivers/driver';
import { Observer } from '../../autoscale/observe';
import { checkPools, DEFAULT_POLICY, parseEncoderPoolFlag, parsePoolFlag, readConfigFile, type PoolSpec, type ScalingPolicy } from '../../autoscale/policy';
import { CliError, parseCommand, parseNumber } from '../args';
import { noUnits, resolveBundle } from '../resolve-bundle';

const USAGE =
  'unimoe autoscale <bundle-or-s3-uri> --nats URL --driver process|docker|external (--pool NAME=EXPERTS[@LAYERS] ... | --config FILE)\n' +
  '  [--encoder-pool NAME=vision,audio ...] [--min 0] [--max 4] [--port N] [--interval-ms 2000] [--state-dir .cache/autoscale [--tie-replicas]] [--target-busy 0.6] [--target-tokens N]\n' +
  '  [--idle-to-zero-s 60] [--scale-down-window-s 30] [--hot-replicas 0] [--hot-units 4 | --hot-memory-mb N] [--worker-arg ARG ...]';

export async function run(argv: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const { values, positionals } = parseCommand(
    argv,
    {
      nats: s,
      driver: s,
      pool: { type: 'string', multiple: true },
      'encoder-pool': { type: 'string', multiple: true },
      config: s,
      min: s,
      max: s,
      port: s,
      'interval-ms': s,
      'state-dir': s,
      'tie-replicas': { type: 'boolean' },
      'target-busy': s,
      'target-tokens': s,
      'idle-to-zero-s': s,
      'scale-down-window-s': s,
      'hot-replicas': s,
      'hot-units': s,
      'hot-memory-mb': s,
      'worker-arg': { type: 'string', multiple: true },
    },
    USAGE,
  );
  if (positionals.length !== 1) throw new CliError(`expected one <bundle-or-s3-uri>\nusage: ${USAGE}`);
  const natsUrl = values.nats ?? process.env.NATS_URL;
  if (!natsUrl) throw new CliError(`--nats URL (or NATS_URL) is required\nusage: ${USAGE}`);
  const driverKind = values.driver ?? 'process';
  if (!['process', 'docker', 'external'].includes(driverKind)) throw new CliError(`--driver must be process, docker or external, got ${JSON.stringify(driverKind)}`);
  const limits = {
    minReplicas: parseNumber(values.min, '--min', 0, { integer: true, min: 0 }),
    maxReplicas: parseNumber(values.max, '--max', 4, { integer: true, min: 1 }),
  };
  if (limits.minReplicas > limits.maxReplicas) throw new CliError(`--min ${limits.minReplicas} is above --max ${limits.maxReplicas}`);

  let pools: PoolSpec[] = [];
  let filePolicy: Partial<ScalingPolicy> = {};
  try {
    if (values.config) ({ pools, policy: filePolicy } = await readConfigFile(values.config, limits));
    pools.push(...(values.pool ?? []).map((p) => parsePoolFlag(p, limits)));
    pools.push(...(values['encoder-pool'] ?? []).map((p) => parseEncoderPoolFlag(p, limits)));
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  if (pools.length === 0) throw new CliError(`give at least one --pool NAME=EXPERTS[@LAYERS] or a --config file\nusage: ${USAGE}`);
  const bundle = positionals[0]!;
  const manifest = await readManifest(await resolveBundle(bundle, noUnits));
  const model = { layers: manifest.config.layers, experts: manifest.config.experts };
  try {
    checkPools(pools, { ...model, units: manifest.units.map((u) => u.name) });
  } catch (err) {
    throw new CliError(err instanceof Error ? err.message : String(err));
  }
  const policy: ScalingPolicy = {
    ...DEFAULT_POLICY,
    ...filePolicy,
    ...(values['target-busy'] ? { targetBusyFraction: parseNumber(values['target-busy'], '--target-busy', 0.6, { min: 0.01, max: 1 }) } : {}),
    ...(values['target-tokens'] ? { targetTokensPerSecond: parseNumber(values['target-tokens'], '--target-tokens', 0, { min: 0 }) } : {}),
    ...(values['idle-to-zero-s'] ? { idleToZeroMs: parseNumber(values['idle-to-zero-s'], '--idle-to-zero-s', 60, { min: 0 }) * 1000 } : {}),
    ...(values['scale-down-window-s'] ? { scaleDownStabilizationMs: parseNumber(values['scale-down-window-s'], '--scale-down-window-s', 30, { min: 0 }) * 1000 } : {}),
  };
  policy.hot = {
    ...policy.hot,
    ...(values['hot-replicas'] ? { maxReplicas: parseNumber(values['hot-replicas'], '--hot-replicas', 0, { integer: true, min: 0 }) } : {}),
    ...(values['hot-units'] ? { unitsPerReplica: parseNumber(values['hot-units'], '--hot-units', 4, { integer: true, min: 1 }) } : {}),
  };
  if (values['hot-memory-mb']) {
    // The memory budget of one hot replica, in units: how many of the bundle's largest expert units fit.
    const budget = parseNumber(values['hot-memory-mb'], '--hot-memory-mb', 0, { min: 0.001 }) * 2 ** 20;
    const unitBytes = Math.max(...manifest.units.filter((u) => u.kind === 'expert').map((u) => u.bytes));
    if (budget < unitBytes) throw new CliError(`--hot-memory-mb ${values['hot-memory-mb']}: one expert unit of this bundle needs ${(unitBytes / 2 ** 20).toPrecision(3)} MiB`);
    policy.hot.unitsPerReplica = Math.floor(budget / unitBytes);
  }
  const metricsPort = values.port === undefined ? undefined : parseNumber(values.port, '--port', 0, { integer: true, min: 0, max: 65535 });

  const observer = await Observer.open({ natsUrl, model: wireModel(manifest), ...model });
  let driver: Driver;
  try {
    if (driverKind === 'process') {
      const { ProcessDriver } = await import('../../autoscale/drivers/process');
      // --tie-replicas (`unimoe cluster`): replicas die with this process instead of outliving a restart.
      driver = new ProcessDriver({ bundle, natsUrl, stateDir: resolve(values['state-dir'] ?? '.cache/autoscale'), workerArgs: values['worker-arg'] ?? [], tieToParent: values['tie-replicas'] === true });
    } else if (driverKind === 'docker') {
      const docker = await (await import('../../autoscale/drivers/docker')).DockerDriver.connect();
      if (docker.project) console.log(`[autoscale] docker driver: the pools of Compose project ${docker.project}`);
      driver = docker;
    } else {
      driver = new (await import('../../autoscale/drivers/external')).ExternalDriver(() => observer.replicas());
    }
  } catch (err) {
    await observer.close();
    throw new CliError((err as Error).message);
  }
  if (driverKind === 'external' && policy.hot.maxReplicas > 0) {
    console.error('[autoscale] --driver external: hot-expert replicas need a driver that starts them; hot replication is off');
    policy.hot.maxReplicas = 0;
  }
  const controller = new Controller({ model, pools, policy, driver, observer, intervalMs: parseNumber(values['interval-ms'], '--interval-ms', 2000, { integer: true, min: 100 }) });
  await controller.init();
  let server: Server | undefined;
  if (metricsPort !== undefined) {
    server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('not found: the autoscaler serves GET /metrics\n');
        return;
      }
      void controller.metrics.registry.metrics().then((body) => res.writeHead(200, { 'Content-Type': controller.metrics.registry.contentType }).end(body));
    });
    await new Promise<void>((ok, fail) => server!.once('error', fail).listen(metricsPort, '0.0.0.0', ok));
    const address = server.address();
    console.log(`[autoscale] metrics on http://127.0.0.1:${typeof address === 'object' && address ? address.port : metricsPort}/metrics`);
  }
  controller.start();
  console.log(`[autoscale] ${manifest.name}: ${pools.map((p) => `${p.name}=[${p.minReplicas}, ${p.maxReplicas}]`).join(', ')} via the ${driver.kind} driver`);
  await new Promise<void>((done) => {
    process.once('SIGINT', () => done());
    process.once('SIGTERM', () => done());
  });
  await controller.stop();
  await observer.close();
  server?.close();
  console.log('[autoscale] stopped; replicas keep running');
  return 0;
}
