/**
 * `unimoe cluster <bundle>`: a whole split deployment on this machine for development and demos -
 * nats-server from PATH, two expert pools with disjoint experts (N replicas each), an encoder pool when
 * the bundle is multimodal, and the edge API -
 * all stopped together on Ctrl-C (or when any of them dies).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readManifest } from '@unimoe/shared/bundle/load';
import { freePort, portAccepts } from '@unimoe/shared/runtime/ports';
import { ProcessDriver } from '../../autoscale/drivers/process';
import { CliError, parseCommand, parseNumber } from '../args';
import { noUnits, resolveBundle } from '../resolve-bundle';

const USAGE = 'unimoe cluster [<bundle>] [--port 8000] [--nats-port N] [--replicas 1] [--no-auth] [--autoscale [--metrics-port N]]';
const MAIN = fileURLToPath(new URL('../main.ts', import.meta.url));

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
  const driver = new ProcessDriver({ bundle, natsUrl, stateDir, inheritOutput: true });

  const children: ChildProcess[] = [];
  let stopping = false;
  const stopAll = (code: number) => {
    if (stopping) return;
    stopping = true;
    setTimeout(() => process.exit(code), 15_000).unref();
    const exited = (c: ChildProcess) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('exit', r)));
    void (async () => {
      // The edge, encoders and autoscaler first (it starts no replica after that), then the pools drain
      // while NATS still runs, then nats-server.
      const [nats, ...others] = children;
      for (const child of others.reverse()) child.kill('SIGTERM');
      await Promise.all(others.map(exited));
      await driver.stopAll();
      nats?.kill('SIGTERM');
      await rm(stateDir, { recursive: true, force: true });
      await Promise.all(children.map(exited));
      process.exit(code);
    })();
  };
  const start = (label: string, cmd: string, args: string[]) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('error', (err) => {
      console.error(`[cluster] ${label} failed to start: ${err.message}`);
      stopAll(1);
    });
    child.once('exit', (code, signal) => {
      if (!stopping) {
        console.error(`[cluster] ${label} exited (${signal ?? code}); stopping the cluster`);
        stopAll(1);
      }
    });
    children.push(child);
    console.error(`[cluster] started ${label}`);
  };

  start('nats-server', 'nats-server', ['-a', '127.0.0.1', '-p', String(natsPort)]);
  await waitForPort(natsPort, 10_000);
  const node = [process.execPath, '--import', 'tsx', MAIN];
  if (values.autoscale) {
    // The autoscaler owns the pools (0 to --replicas each, from zero on demand); it shares the driver's state directory.
    const scaleArgs = ['autoscale', bundle, '--nats', natsUrl, '--driver', 'process', '--state-dir', stateDir, '--min', '0', '--max', String(replicas)];
    for (const pool of pools) scaleArgs.push('--pool', `${pool.pool}=${pool.experts[0]}-${pool.experts.at(-1)}`);
    if (values['metrics-port']) scaleArgs.push('--port', values['metrics-port']);
    start(`autoscaler (pools ${pools.map((p) => p.pool).join(', ')}: 0-${replicas} replicas)`, node[0]!, [...node.slice(1), ...scaleArgs]);
  } else {
    for (const pool of pools) {
      await driver.scale(pool, replicas);
      console.error(`[cluster] started ${pool.pool} (experts ${pool.experts[0]}-${pool.experts.at(-1)}) x ${replicas} via the process driver`);
    }
  }
  // A multimodal bundle's encoders get a pool of their own.
  const encoders = manifest.units.filter((u) => u.kind === 'vision' || u.kind === 'audio').map((u) => u.kind);
  if (encoders.length > 0) {
    start(`pool-encoders (${encoders.join(', ')})`, node[0]!, [...node.slice(1), 'worker', bundle, '--pool', 'pool-encoders', '--encoders', encoders.join(','), '--nats', natsUrl]);
  }
  const serveArgs = ['serve', bundle, '--nats', natsUrl, '--port', values.port ?? '8000'];
  if (values['no-auth']) serveArgs.push('--no-auth');
  if (values.autoscale) serveArgs.push('--scale-from-zero-s', '120');
  start('edge', node[0]!, [...node.slice(1), ...serveArgs]);
  process.on('SIGINT', () => stopAll(0));
  process.on('SIGTERM', () => stopAll(0));
  await new Promise(() => {});
  return 0;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
}
