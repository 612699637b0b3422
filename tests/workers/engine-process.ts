/** `unimoe engine <bundle> --nats URL` as a real process, for the Worker's tests and benchmark. */
import type { ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { spawnTied } from '@unimoe/shared/runtime/tied-child';

const REPO = resolve(import.meta.dirname, '..', '..');

export interface EngineProcess {
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/** Resolves once the engine says it is ready; fails with its output if it exits or takes longer than `timeoutMs`. */
export async function startEngineProcess(bundle: string, natsUrl: string, opts: { args?: string[]; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<EngineProcess> {
  const child = spawnTied(process.execPath, ['--import', 'tsx', join(REPO, 'edge', 'src', 'cli', 'main.ts'), 'engine', bundle, '--nats', natsUrl, ...(opts.args ?? [])], {
    cwd: REPO,
    env: { ...process.env, UNIMOE_THREADS: '1', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  await new Promise<void>((ready, fail) => {
    const timer = setTimeout(() => fail(new Error(`unimoe engine was not ready within ${opts.timeoutMs ?? 120_000} ms:\n${output}`)), opts.timeoutMs ?? 120_000);
    const collect = (d: Buffer) => {
      output = (output + d.toString()).slice(-100_000);
      if (/engine \S+ ready/.test(output)) {
        clearTimeout(timer);
        ready();
      }
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    void exited.then(() => {
      clearTimeout(timer);
      fail(new Error(`unimoe engine exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${output}`));
    });
  }).catch(async (err: unknown) => {
    await stop();
    throw err;
  });
  return { child, output: () => output, stop };
}
