/** Shared pieces for the split-execution tests: the tiny bundle, worker processes, the float64 reference. */
import type { ChildProcess } from 'node:child_process';
import { spawnTied } from '@unimoe/shared/runtime/tied-child';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { headers as natsHeaders } from 'nats';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';

export const REPO = resolve(import.meta.dirname, '..', '..');
const CHECKPOINT = join(REPO, 'tests', 'fixtures', 'models', 'unimoe-4e');

/** Converts the tiny unimoe-4e checkpoint into a fresh bundle directory; `cleanup` removes it. */
export async function tinyBundle(): Promise<{ dir: string; manifest: Manifest; cleanup: () => Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), 'unimoe-split-'));
  const dir = join(root, 'tiny-4e');
  const manifest = await convertCheckpoint({ checkpointDir: CHECKPOINT, bundleDir: dir });
  return { dir, manifest, cleanup: () => rm(root, { recursive: true, force: true }) };
}

/** make_split_fixtures.py: x [rows, hidden] and the float64 expert outputs per unit. */
export const expertReference = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'expert_reference.json'), 'utf8')) as {
  rows: number;
  hidden: number;
  x: number[];
  y: Record<string, number[]>;
};

/** Rows r0..r1 of the reference input, repeated to `rows` rows (so larger batches stay checkable). */
export function referenceRows(rows: number, offset = 0): { x: Float32Array; rowIndex: number[] } {
  const { hidden, x } = expertReference;
  const out = new Float32Array(rows * hidden);
  const rowIndex: number[] = [];
  for (let r = 0; r < rows; r++) {
    const src = (r + offset) % expertReference.rows;
    rowIndex.push(src);
    out.set(x.slice(src * hidden, (src + 1) * hidden), r * hidden);
  }
  return { x: out, rowIndex };
}

/** Largest |got - want| over rows drawn from the reference (rowIndex from referenceRows). */
export function maxErrorVsReference(unit: string, got: Float32Array, rowIndex: number[]): number {
  const { hidden } = expertReference;
  const want = expertReference.y[unit];
  if (!want) throw new Error(`no reference for ${unit}`);
  if (got.length !== rowIndex.length * hidden) throw new Error(`${unit}: got ${got.length} values for ${rowIndex.length} rows`);
  let max = 0;
  rowIndex.forEach((src, r) => {
    for (let j = 0; j < hidden; j++) max = Math.max(max, Math.abs(got[r * hidden + j] - want[src * hidden + j]));
  });
  return max;
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

export interface WorkerProcess {
  child: ChildProcess;
  /** Resolves once the worker logged that it joined; rejects if it exits first. */
  ready: Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
  /** Everything it printed so far (stdout, then stderr). */
  output: () => string;
}

/** `node --import tsx gpu-worker/src/main.ts <args>`: the worker as its own OS process. */
export function spawnWorker(args: string[], env: Record<string, string> = {}): WorkerProcess {
  const child = spawnTied(process.execPath, ['--import', 'tsx', join(REPO, 'gpu-worker', 'src', 'main.ts'), ...args], {
    cwd: REPO,
    env: { ...process.env, UNIMOE_THREADS: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  const ready = new Promise<void>((resolve, reject) => {
    const onData = () => {
      if (/on execution provider/.test(stdout)) {
        child.stdout!.off('data', onData);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    void exited.then(({ code, signal }) => reject(new Error(`worker exited (${code ?? signal}) before joining:\n${stdout}\n${stderr}`)));
  });
  ready.catch(() => {}); // callers that only await `exited` must not see an unhandled rejection
  return { child, ready, exited, output: () => stdout + stderr };
}

/** NATS headers from a plain record (for hand-made, possibly malformed, wire messages). */
export function toHeaders(record: Record<string, string>) {
  const h = natsHeaders();
  for (const [k, v] of Object.entries(record)) h.set(k, v);
  return h;
}

/** Polls `cond` every 20 ms until it holds or `timeoutMs` passes. */
export async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
