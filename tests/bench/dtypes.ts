/**
 * bench:engine's weight-dtype rows: per dtype of the benchmark model (float32, float16, int8, int4), the
 * bytes of weights one batch-1 decode step reads (from the units the engine loads), the measured step
 * time, and its ratio to the bandwidth limit bytes / read bandwidth. `pnpm bench:dtypes` prints only this.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { readManifest } from '@unimoe/shared/bundle/load';
import { initializerSizes } from '@unimoe/shared/onnx/initializer-sizes';
import type { Manifest, UnitSpec, UnitWeightDType } from '@unimoe/shared/bundle/manifest';
import { realisticBundle } from './realistic-model';
import { gemvBandwidth } from './bandwidth';
import { fmt, printTable } from './table';

const DTYPES: readonly UnitWeightDType[] = ['float32', 'float16', 'int8', 'int4'];
const STEP_SCRIPT = fileURLToPath(new URL('./dtype-step.ts', import.meta.url));

/**
 * Bytes of one unit's weights as onnxruntime holds them on CPU. float16 initializers feed a Cast that
 * onnxruntime folds at load, so they are held (and read) as float32; the embedding table is the
 * exception (Gather reads float16 rows), and only one row of it is read per token.
 */
async function residentWeightBytes(bundleDir: string, unit: UnitSpec): Promise<number> {
  let bytes = 0;
  for (const t of initializerSizes(await readFile(join(bundleDir, unit.file)))) bytes += t.elemType === 'float16' && unit.kind !== 'embed' ? t.bytes * 2 : t.bytes;
  return bytes;
}

/** A batch-1 decode step reads every attn unit, top-k of each layer's experts, the head, and one embedding row. */
export async function bytesPerDecodeStep(bundleDir: string, manifest: Manifest): Promise<number> {
  const { experts, routing, vocab } = manifest.config;
  let bytes = 0;
  for (const unit of manifest.units) {
    if (unit.kind === 'vision' || unit.kind === 'speech' || unit.kind === 'audio') continue;
    const held = await residentWeightBytes(bundleDir, unit);
    if (unit.kind === 'expert') bytes += (held * routing.topK) / experts;
    else if (unit.kind === 'embed') bytes += held / vocab;
    else bytes += held;
  }
  return bytes;
}

async function measureStep(bundleDir: string): Promise<{ residentMiB: number; msPerStep: number }> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', STEP_SCRIPT, bundleDir], { maxBuffer: 2 ** 24 });
  return JSON.parse(stdout.trimEnd().split('\n').at(-1)!);
}

export async function printDtypeRows(): Promise<void> {
  // Read bandwidth is measured before and after every row and the best counts: on a shared machine a
  // single measurement can land in someone else's burst and understate the limit.
  let bandwidth = await gemvBandwidth();
  const measured: { label: string; fileMiB: number; residentMiB: number; bytes: number; msPerStep: number }[] = [];
  for (const dtype of DTYPES) {
    const bundleDir = await realisticBundle(console.error, dtype);
    const manifest = await readManifest(bundleDir);
    const bytes = await bytesPerDecodeStep(bundleDir, manifest);
    const { residentMiB, msPerStep } = await measureStep(bundleDir);
    bandwidth = Math.max(bandwidth, await gemvBandwidth());
    const label = manifest.quant ? `${dtype} (block ${manifest.quant.blockSize})` : dtype;
    measured.push({ label, fileMiB: manifest.units.reduce((sum, u) => sum + u.bytes, 0) / 2 ** 20, residentMiB, bytes, msPerStep });
  }
  const baseline = measured[0]!.msPerStep;
  const rows = measured.map((m) => {
    const limitMs = (m.bytes / (bandwidth * 1e9)) * 1000;
    return [m.label, fmt(m.fileMiB, 0), fmt(m.residentMiB, 0), fmt(m.bytes / 2 ** 20, 1), fmt(m.msPerStep, 2), fmt(limitMs, 2), fmt(m.msPerStep / limitMs, 2), fmt(baseline / m.msPerStep, 2)];
  });
  printTable(
    `Weight dtypes, batch-1 decode (read bandwidth ${fmt(bandwidth)} GB/s: best onnxruntime float32 matrix-vector over 256 MiB, measured between rows)`,
    ['dtype', 'bundle MiB', 'resident MiB (RSS)', 'weights read per step MiB', 'ms per step', 'limit ms (bytes / bandwidth)', 'step / limit', 'speed-up vs float32'],
    rows,
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  printDtypeRows().catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
