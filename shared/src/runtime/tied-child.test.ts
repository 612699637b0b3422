/** spawnTied: a child started by a process that is then killed with SIGKILL still goes away. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const TIED = fileURLToPath(new URL('./tied-child.ts', import.meta.url));

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('spawnTied', () => {
  it.each([
    ['started with spawnTied, it dies with its SIGKILLed parent', 'spawnTied', false],
    ['started with plain spawn (the control), it outlives its SIGKILLed parent', 'spawn', true],
  ] as const)('%s', async (_name, how, survives) => {
    // The parent starts `sleep 60` and prints its pid; we kill the parent with SIGKILL.
    const script =
      how === 'spawnTied'
        ? `import { spawnTied } from ${JSON.stringify(TIED)}; const c = spawnTied('sleep', ['60'], { stdio: 'ignore' }); console.log(c.pid);`
        : `import { spawn } from 'node:child_process'; const c = spawn('sleep', ['60'], { stdio: 'ignore' }); console.log(c.pid);`;
    const parent = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pid = await new Promise<number>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
    expect(alive(pid)).toBe(true);
    const gone = new Promise((resolve) => parent.once('exit', resolve));
    parent.kill('SIGKILL');
    await gone;
    const deadline = Date.now() + 3000;
    while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(alive(pid)).toBe(survives);
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
});
