/**
 * Child processes that die with their parent, even when the parent is killed with SIGKILL and gets no
 * chance to stop them. Node cannot set PR_SET_PDEATHSIG itself, so on Linux the child is started
 * through util-linux's `setpriv --pdeathsig TERM`, which sets it and then execs the command (same pid):
 * the kernel sends the child SIGTERM when its parent exits, and the child shuts down as on a normal stop.
 * Elsewhere (no setpriv) the child is started directly and only the parent's own shutdown stops it.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

let setpriv: string | null | undefined;

function findSetpriv(): string | null {
  if (setpriv !== undefined) return setpriv;
  setpriv = null;
  if (process.platform === 'linux') {
    for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
      if (dir && existsSync(join(dir, 'setpriv'))) return (setpriv = join(dir, 'setpriv'));
    }
  }
  return setpriv;
}

/** Like child_process.spawn, but the child gets SIGTERM when this process dies (Linux). */
export function spawnTied(command: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
  const wrapper = findSetpriv();
  return wrapper ? spawn(wrapper, ['--pdeathsig', 'TERM', '--', command, ...args], options) : spawn(command, args, options);
}
