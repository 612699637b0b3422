/**
 * The smallest image that behaves like a pool worker for the docker driver: a static C program that
 * waits for SIGTERM, imported from a one-file tarball (no base image, no registry).
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Dockerd } from '../../helpers/dockerd';

const run = promisify(execFile);

const SLEEPER_C = `
#include <signal.h>
#include <unistd.h>
static volatile sig_atomic_t stop = 0;
static void on_term(int s) { (void)s; stop = 1; }
int main(void) { signal(SIGTERM, on_term); signal(SIGINT, on_term); while (!stop) pause(); return 0; }
`;

/** `name` = an image whose entrypoint ignores its arguments (the worker flags) and exits 0 on SIGTERM. */
export async function buildSleeperImage(d: Dockerd, name: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'unimoe-sleeper-'));
  try {
    await writeFile(join(dir, 'sleeper.c'), SLEEPER_C);
    await mkdir(join(dir, 'rootfs'));
    await run('gcc', ['-static', '-O2', '-o', join(dir, 'rootfs', 'sleeper'), join(dir, 'sleeper.c')]);
    await run('tar', ['-C', join(dir, 'rootfs'), '-cf', join(dir, 'rootfs.tar'), '.']);
    d.run('docker', ['import', '--change', 'ENTRYPOINT ["/sleeper"]', join(dir, 'rootfs.tar'), name]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
