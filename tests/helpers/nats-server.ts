/**
 * A real nats-server (Debian's binary) on a free loopback port, for tests. Headers are on by default
 * (server >= 2.2). `maxPayload` and `config` (nats-server.conf text, e.g. `unimoe nats-auth` output) go into a
 * config file, since the server has no flags for them.
 */
import type { ChildProcess } from 'node:child_process';
import { spawnTied } from '@unimoe/shared/runtime/tied-child';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { freePort, portAccepts } from '@unimoe/shared/runtime/ports';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface NatsServer {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** `port`: a given one (e.g. to restart a server where its clients reconnect); default a free one. */
export async function startNatsServer(opts: { maxPayload?: number; config?: string; port?: number } = {}): Promise<NatsServer> {
  const port = opts.port ?? (await freePort());
  const dir = await mkdtemp(join(tmpdir(), 'unimoe-nats-'));
  const args = ['-a', '127.0.0.1', '-p', String(port)];
  if (opts.maxPayload !== undefined || opts.config !== undefined) {
    const conf = join(dir, 'nats.conf');
    await writeFile(conf, `${opts.maxPayload === undefined ? '' : `max_payload: ${opts.maxPayload}\n`}${opts.config ?? ''}`);
    args.push('-c', conf);
  }
  const child = spawnTied('nats-server', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  try {
    await waitForPort(port, child, () => stderr);
  } catch (err) {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function waitForPort(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`nats-server exited with ${child.exitCode}: ${log()}`);
    if (await portAccepts(port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nats-server did not accept connections on port ${port} within 10 s: ${log()}`);
}

export { freePort };
