/**
 * A private Docker daemon for the docker-driver test: its own data root, exec root and unix socket
 * under a temp dir, no bridge network and no iptables changes (containers run with --network none),
 * stopped and removed afterwards. Also builds the smallest image that behaves like a pool worker for
 * the driver: a static C program that waits for SIGTERM, imported from a one-file tarball.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Docker from 'dockerode';

const run = promisify(execFile);

export interface PrivateDockerd {
  socketPath: string;
  docker: Docker;
  stop(): Promise<void>;
}

export async function startDockerd(): Promise<PrivateDockerd> {
  const dir = await mkdtemp(join(tmpdir(), 'unimoe-dockerd-'));
  const socketPath = join(dir, 'docker.sock');
  const child = spawn(
    'dockerd',
    ['--data-root', join(dir, 'data'), '--exec-root', join(dir, 'exec'), '-H', `unix://${socketPath}`, '--pidfile', join(dir, 'docker.pid'), '--bridge', 'none', '--iptables=false', '--ip6tables=false'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  const docker = new Docker({ socketPath });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`dockerd exited (${child.exitCode}); it needs root. Its log:\n${log}`);
    }
    if (await docker.ping().then(() => true, () => false)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`dockerd did not answer on ${socketPath} within 60 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { socketPath, docker, stop };
}

const SLEEPER_C = `
#include <signal.h>
#include <unistd.h>
static volatile sig_atomic_t stop = 0;
static void on_term(int s) { (void)s; stop = 1; }
int main(void) { signal(SIGTERM, on_term); signal(SIGINT, on_term); while (!stop) pause(); return 0; }
`;

/** `name` = an image whose entrypoint ignores its arguments (the worker flags) and exits 0 on SIGTERM. */
export async function buildSleeperImage(d: PrivateDockerd, name: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'unimoe-sleeper-'));
  try {
    await writeFile(join(dir, 'sleeper.c'), SLEEPER_C);
    await mkdir(join(dir, 'rootfs'));
    await run('gcc', ['-static', '-O2', '-o', join(dir, 'rootfs', 'sleeper'), join(dir, 'sleeper.c')]);
    await run('tar', ['-C', join(dir, 'rootfs'), '-cf', join(dir, 'rootfs.tar'), '.']);
    await run('docker', ['import', '--change', 'ENTRYPOINT ["/sleeper"]', join(dir, 'rootfs.tar'), name], { env: { ...process.env, DOCKER_HOST: `unix://${d.socketPath}` } });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
