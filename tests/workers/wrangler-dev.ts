/**
 * The Worker under `wrangler dev` (local workerd, offline, no telemetry) for tests and benchmarks: its own
 * D1 state in a temp dir (migrated first), settings passed as vars, secrets through an env file. Startup
 * waits until workerd answers HTTP and fails loudly with wrangler's output when it does not; stop() kills
 * wrangler's whole process group, so no workerd is left behind.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawnTied } from '@unimoe/shared/runtime/tied-child';
import { freePort } from '@unimoe/shared/runtime/ports';
import { makeTempDir } from '../helpers/tmp';
import { migrateLocalD1, offlineEnv, WORKER_DIR, WRANGLER_CLI } from '../../infra/workers/wrangler';

export interface WorkerDev {
  url: string;
  /** The local D1 state (pass as WORKERS_STATE_DIR to `pnpm workers:keys`). */
  stateDir: string;
  /** wrangler's and the Worker's output so far (the Worker logs JSON lines). */
  output(): string;
  stop(): Promise<void>;
}

export interface WorkerDevOptions {
  /** `[vars]` (NATS_WS_URL, MODEL, limits...). */
  vars: Record<string, string>;
  /** Secrets (NATS_USER, NATS_PASSWORD...), given as wrangler's .dev.vars would. */
  secrets?: Record<string, string>;
  /** How long workerd may take to answer its first request (default 90 s: the machine is shared). */
  startTimeoutMs?: number;
}

export async function startWorkerDev(opts: WorkerDevOptions): Promise<WorkerDev> {
  const tmp = await makeTempDir('wrangler');
  const stateDir = join(tmp.dir, 'state');
  const port = await freePort();
  await migrateLocalD1(stateDir);
  const envFile = join(tmp.dir, 'secrets.env');
  await writeFile(envFile, Object.entries(opts.secrets ?? {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join('\n'));
  const args = ['dev', '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(await freePort()), '--persist-to', stateDir,
    '--env-file', envFile, '--show-interactive-dev-session=false'];
  for (const [k, v] of Object.entries(opts.vars)) args.push('--var', `${k}:${v}`);
  // Its own process group: wrangler starts workerd processes, and stop() must end them all.
  const child = spawnTied(process.execPath, [WRANGLER_CLI, ...args], { cwd: WORKER_DIR, env: offlineEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (d: Buffer) => (output = (output + d.toString()).slice(-200_000));
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    await killGroup(child, exited);
    await tmp.cleanup();
  };
  try {
    await waitForHttp(url, child, () => output, opts.startTimeoutMs ?? 90_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, stateDir, output: () => output, stop };
}

/** Any HTTP answer means workerd serves the Worker (the app itself may still wait for an engine). */
async function waitForHttp(url: string, child: ChildProcess, output: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`wrangler dev exited (${child.exitCode ?? child.signalCode}) before serving:\n${output()}`);
    try {
      await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error(`wrangler dev did not answer on ${url} within ${timeoutMs} ms:\n${output()}`);
}

async function killGroup(child: ChildProcess, exited: Promise<void>): Promise<void> {
  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // The group is gone already.
    }
  };
  signalGroup('SIGTERM');
  const timer = setTimeout(() => signalGroup('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
  // wrangler may exit before its workerd children: make sure none outlives it.
  signalGroup('SIGKILL');
}
