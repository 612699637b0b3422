/** Runs the CLI as a user does (`node --import tsx edge/src/cli/main.ts ...`) and collects its output. */
import { spawnTied } from '@unimoe/shared/runtime/tied-child';
import { join, resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '..', '..');
const MAIN = join(REPO, 'edge', 'src', 'cli', 'main.ts');

export function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string; lastLine: string }> {
  return new Promise((resolve) => {
    const child = spawnTied(process.execPath, ['--import', 'tsx', MAIN, ...args], { cwd: REPO, env: { ...process.env, UNIMOE_THREADS: '1', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr, lastLine: stdout.trimEnd().split('\n').at(-1) ?? '' }));
  });
}
