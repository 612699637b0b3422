/**
 * `unimoe cluster <bundle>`: a whole split deployment on this machine for development and demos -
 * nats-server from PATH, two expert pools with disjoint experts (N replicas each), an encoder pool when
 * the bundle is multimodal, and the edge API -
 * all stopped together on Ctrl-C (or when any of them dies).
 */
import { isEncoderKind } from '@unimoe/shared/bundle/manifest';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { readManifest } from '@unimoe/shared/bundle/load';
import { freePort, portAccepts } from '@unimoe/shared/runtime/ports';
import { CliError, parseCommand, parseNumber } from '../args';
import { noUnits, resolveBundle } from '../resolve-bundle';

const USAGE = 'unimoe cluster [<bundle>] [--port 8000] [--nats-port N] [--replicas 1] [--no-auth]';
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
  const { values, positionals } = parseCommand(argv, { port: s, 'nats-port': s, replicas: s, 'no-auth': { type: 'boolean' } }, USAGE);
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
    { name: 'pool-a', experts: `0-${half - 1}` },
    { name: 'pool-b', experts: `${half}-${experts - 1}` },
  ].filter((p) => experts > 1 || p.name === 'pool-a');

  const children: ChildProcess[] = [];
  let stopping = false;
  const stopAll = (code: number) => {
    if (stopping) return;
    stopping = true;
    for (const child of children.reverse()) child.kill('SIGTERM');
    setTimeout(() => process.exit(code), 5000).unref();
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
  for (const pool of pools) {
    for (let r = 0; r < replicas; r++) {
      start(`${pool.name} replica ${r} (experts ${pool.experts})`, node[0]!, [...node.slice(1), 'worker', bundle, '--pool', pool.name, '--experts', pool.experts, '--nats', natsUrl]);
    }
  }
  // A multimodal bundle's encoders get a pool of their own.
  const encoders = manifest.units.filter((u) => isEncoderKind(u.kind)).map((u) => u.kind);
  if (encoders.length > 0) {
    start(`pool-encoders (${encoders.join(', ')})`, node[0]!, [...node.slice(1), 'worker', bundle, '--pool', 'pool-encoders', '--encoders', encoders.join(','), '--nats', natsUrl]);
  }
  const serveArgs = ['serve', bundle, '--nats', natsUrl, '--port', values.port ?? '8000'];
  if (values['no-auth']) serveArgs.push('--no-auth');
  start('edge', node[0]!, [...node.slice(1), ...serveArgs]);
  process.on('SIGINT', () => stopAll(0));
  process.on('SIGTERM', () => stopAll(0));
  await new Promise(() => {});
  return 0;
}
