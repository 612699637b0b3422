import { workerCommand } from '@unimoe/gpu-worker/cli';

export function run(argv: string[]): Promise<number> {
  return workerCommand(argv);
}
