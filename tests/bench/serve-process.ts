/**
 * `unimoe serve` as a child process for the API benchmarks: no auth and no per-key limits (the load
 * generator is one client), its own SQLite file, ready once /readyz answers 200.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { spawnTied } from '@unimoe/shared/runtime/tied-child';
import { REPO } from '../split/cluster';

export interface ServeProcess {
  child: ChildProcess;
  ready: Promise<void>;
}

/** `serveArgs`: the bundle and mode flags (e.g. `[bundle, '--nats', url]`). */
export function startServeProcess(serveArgs: string[], port: number, dbFile: string, readyTimeoutMs = 120_000): ServeProcess {
  const args = ['--import', 'tsx', join(REPO, 'edge/src/cli/main.ts'), 'serve', ...serveArgs, '--port', String(port), '--host', '127.0.0.1', '--no-auth', '--max-concurrent', '0', '--rate-limit', '0'];
  const child = spawnTied(process.execPath, args, { cwd: REPO, env: { ...process.env, DATABASE_URL: `file:${dbFile}` }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  const what = `serve ${serveArgs.slice(1).join(' ')}`.trim();
  const ready = (async () => {
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${what} exited: ${stderr}`);
      if (await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false)) return;
      if (Date.now() > deadline) throw new Error(`${what} not ready: ${stderr}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  return { child, ready };
}
