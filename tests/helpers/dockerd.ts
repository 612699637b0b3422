/**
 * A Docker engine of the test's own: Debian's dockerd with its own data root (kept under .cache/ so images
 * and build layers survive between runs on one machine), exec root, socket and pidfile, and no bridge or
 * iptables changes on the host (every test container uses host networking). Started and stopped by the
 * test; a daemon that cannot start is an error, never a skip.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Dockerd {
  /** DOCKER_HOST for the docker and docker-compose clients. */
  host: string;
  /** The daemon's unix socket (for Engine API clients such as dockerode). */
  socketPath: string;
  /** Runs a client command against this daemon; throws with its output when it exits non-zero. */
  run(cmd: string, args: string[], opts?: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; withStderr?: boolean }): string;
  stop(): Promise<void>;
}

function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/_ping', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

/** dockerd leaves its default network namespace bind-mounted under the exec root; unmount what it left. */
function unmountUnder(dir: string): void {
  const mounts = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[1] ?? '')
    .filter((target) => target.startsWith(`${dir}/`));
  for (const target of mounts.reverse()) spawnSync('umount', ['-l', target]);
}

export async function startDockerd(dataRoot: string): Promise<Dockerd> {
  // The exec root holds containerd's sockets: a short path under /tmp keeps them within the Unix socket limit.
  const runDir = await mkdtemp(join(tmpdir(), 'unimoe-dockerd-'));
  await mkdir(dataRoot, { recursive: true });
  const socket = join(runDir, 'docker.sock');
  const logPath = join(runDir, 'dockerd.log');
  const log = openSync(logPath, 'a');
  const args = [
    `--data-root=${dataRoot}`,
    `--exec-root=${join(runDir, 'exec')}`,
    `--pidfile=${join(runDir, 'docker.pid')}`,
    `--host=unix://${socket}`,
    '--storage-driver=overlay2',
    // No docker0 bridge, NAT or iptables rules on the host: containers share the host's network namespace.
    '--bridge=none',
    '--iptables=false',
    '--ip-forward=false',
    '--ip-masq=false',
  ];
  let daemon: ChildProcess;
  try {
    daemon = spawn('dockerd', args, { stdio: ['ignore', log, log] });
  } finally {
    closeSync(log);
  }
  let exited: string | undefined;
  daemon.on('error', (err) => (exited = err.message));
  daemon.on('exit', (code, signal) => (exited = `exited with ${signal ?? code}`));
  const tail = () => readFileSync(logPath, 'utf8').trim().split('\n').slice(-15).join('\n');

  const deadline = Date.now() + 60_000;
  while (!(await ping(socket))) {
    if (exited || Date.now() > deadline) {
      daemon.kill('SIGKILL');
      unmountUnder(runDir);
      await rm(runDir, { recursive: true, force: true });
      throw new Error(`dockerd did not start (${exited ?? 'not answering after 60 s'}); is docker.io installed and are we root?\n${exited ? '' : tail()}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }

  const host = `unix://${socket}`;
  return {
    host,
    socketPath: socket,
    run(cmd, cmdArgs, opts = {}) {
      const out = spawnSync(cmd, cmdArgs, {
        cwd: opts.cwd,
        env: { ...process.env, ...opts.env, DOCKER_HOST: host },
        encoding: 'utf8',
        timeout: opts.timeoutMs ?? 600_000,
        maxBuffer: 64 << 20,
      });
      if (out.status !== 0) {
        const output = `${out.stdout ?? ''}${out.stderr ?? ''}`.trim().split('\n').slice(-40).join('\n');
        throw new Error(`${cmd} ${cmdArgs.join(' ')} failed (${out.error?.message ?? `exit ${out.status ?? out.signal}`}):\n${output}`);
      }
      return opts.withStderr ? `${out.stdout}${out.stderr}` : out.stdout;
    },
    async stop() {
      if (!exited) {
        const gone = new Promise<void>((r) => daemon.once('exit', () => r()));
        daemon.kill('SIGTERM');
        const timer = setTimeout(() => daemon.kill('SIGKILL'), 30_000);
        await gone;
        clearTimeout(timer);
      }
      unmountUnder(runDir);
      await rm(runDir, { recursive: true, force: true });
    },
  };
}
