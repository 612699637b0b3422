/**
 * `unimoe cluster <bundle>`: a whole split deployment on this machine for development and demos -
 * nats-server from PATH, two expert pools with disjoint experts (N replicas each), an encoder pool when
 * the bundle is multimodal, and the edge API -
 * all stopped together on Ctrl-C (or when any of them dies). Every child is tied to this process
 * (spawnTied): killed with SIGKILL, it still takes them down.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEncoderKind } from '@unimoe/shared/bundle/manifest';
import { log } from '@unimoe/shared/log';
import { spawnTied } from '@unimoe/shared/runtime/tied-child';
import { fileURLToPath } from 'node:url';
import { readManifest } from '@unimoe/shared/bundle/load';
import { freePort, portAccepts } from '@unimoe/shared/runtime/ports';
import { ProcessDriver } from '../../autoscale/drivers/process';
import { CliError, parseCommand, parseNumber } from '../args';
import { noUnits, resolveBundle } from '../resolve-bundle';

const USAGE = 'unimoe cluster [<bundle>] [--port 8000] [--nats-port N] [--replicas 1] [--no-auth] [--autoscale [--metrics-port N]]';
const MAIN = fileURLToPath(new URL('../main.ts', import.meta.url));
/** The edge's drain bound and a worker's (10 s) fit in this; beyond it children are killed. */
const STOP_BOUND_MS = 45_000;

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await portAccepts(port))) {
    if (Date.now() > deadline) throw new CliError(`nats-server did not start listening on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function run(argv: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const { values, positionals } = parseCommand(argv, { port: s, 'nats-port': s, replicas: s, 'no-auth': { type: 'boolean' }, autoscale: { type: 'boolean' }, 'metrics-port': s }, USAGE);
  if (positionals.length > 1) throw new CliError(`expected at most one <bundle>\nusage: ${USAGE}`);
  // No bundle: the demo model (made under ./models on first use).
  const bundle = positionals[0] ?? (await (await import('./demo')).ensureDemoBundle());
  const manifest = await readManifest(await resolveBundle(bundle, noUnits));
  const replicas = parseNumber(values.replicas, '--replicas', 1, { integer: true, min: 1, max: 8 });
  const natsPort = values['nats-port'] ? parseNumber(values['nats-port'], '--nats-port', 0, { integer: true, min: 1, max: 65535 }) : await freePort();
  const natsUrl = `nats://127.0.0.1:${natsPort}`;
  const experts = manifest.config.experts;
  const half = Math.ceil(experts / 2);
  const pools = [
    { pool: 'pool-a', experts: range(0, half) },
    { pool: 'pool-b', experts: range(half, experts) },
  ].filter((p) => p.experts.length > 0);
  // The pools' replicas run under the autoscaler's process driver (the same one `unimoe autoscale` uses).
  const stateDir = await mkdtemp(join(tmpdir(), 'unimoe-cluster-'));
  const driver = new ProcessDriver({ bundle, natsUrl, stateDir, inheritOutput: true, tieToParent: true });

  /** Started in this order; stopped edge first, then the workers (so they can drain), nats-server last. */
  const stages: Record<'nats' | 'workers' | 'edge', ChildProcess[]> = { nats: [], workers: [], edge: [] };
  let stopping = false;
  const stopAll = (code: number) => {
    if (stopping) return;
    stopping = true;
    // Whatever outlives its bound (a worker's drain, the edge's shutdown) is killed.
    const forced = setTimeout(() => {
      for (const child of Object.values(stages).flat()) child.kill('SIGKILL');
    }, STOP_BOUND_MS);
    void (async () => {
      // The edge first, then the workers drain while NATS still runs (the pools' replicas through the
      // process driver), then nats-server.
      for (const stage of [stages.edge, stages.workers, 'pools' as const, stages.nats]) {
        if (stage === 'pools') {
          await driver.stopAll();
          continue;
        }
        const running = stage.filter((c) => c.exitCode === null && c.signalCode === null);
        const exited = running.map((c) => new Promise((resolve) => c.once('exit', resolve)));
        for (const child of running) child.kill('SIGTERM');
        await Promise.all(exited);
      }
      clearTimeout(forced);
      await rm(stateDir, { recursive: true, force: true });
      process.exit(code);
    })();
  };
  const start = (stage: keyof typeof stages, label: string, cmd: string, args: string[]) => {
    const child = spawnTied(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('error', (err) => {
      log.error(`${label} failed to start: ${err.message}`);
      stopAll(1);
    });
    child.once('exit', (code, signal) => {
      if (!stopping) {
        log.error(`${label} exited (${signal ?? code}); stopping the cluster`);
        stopAll(1);
      }
    });
    stages[stage].push(child);
    log.info(`started ${label}`);
  };

  start('nats', 'nats-server', 'nats-server', ['-a', '127.0.0.1', '-p', String(natsPort)]);
  await waitForPort(natsPort, 10_000);
  const node = [process.execPath, '--import', 'tsx', MAIN];
  if (values.autoscale) {
    // The autoscaler owns the pools (0 to --replicas each, from zero on demand); it shares the driver's state
    // directory, and its replicas die with it as it dies with this process.
    const scaleArgs = ['autoscale', bundle, '--nats', natsUrl, '--driver', 'process', '--state-dir', stateDir, '--tie-replicas', '--min', '0', '--max', String(replicas)];
    for (const pool of pools) scaleArgs.push('--pool', `${pool.pool}=${pool.experts[0]}-${pool.experts.at(-1)}`);
    if (values['metrics-port']) scaleArgs.push('--port', values['metrics-port']);
    start('edge', `autoscaler (pools ${pools.map((p) => p.pool).join(', ')}: 0-${replicas} replicas)`, node[0]!, [...node.slice(1), ...scaleArgs]);
  } else {
    for (const pool of pools) {
      await driver.scale(pool, replicas);
      log.info(`started ${pool.pool} (experts ${pool.experts[0]}-${pool.experts.at(-1)}) x ${replicas} via the process driver`);
    }
  }
  // A multimodal bundle's encoders get a pool of their own.
  const encoders = manifest.units.filter((u) => isEncoderKind(u.kind)).map((u) => u.kind);
  if (encoders.length > 0) {
    start('workers', `pool-encoders (${encoders.join(', ')})`, node[0]!, [...node.slice(1), 'worker', bundle, '--pool', 'pool-encoders', '--encoders', encoders.join(','), '--nats', natsUrl]);
  }
  const serveArgs = ['serve', bundle, '--nats', natsUrl, '--port', values.port ?? '8000'];
  if (values['no-auth']) serveArgs.push('--no-auth');
  if (values.autoscale) serveArgs.push('--scale-from-zero-s', '120');
  start('edge', 'edge', node[0]!, [...node.slice(1), ...serveArgs]);
  process.on('SIGINT', () => stopAll(0));
  process.on('SIGTERM', () => stopAll(0));
  await new Promise(() => {});
  return 0;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
}
