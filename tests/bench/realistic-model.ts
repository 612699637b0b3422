/**
 * The benchmark model: make-tiny weights at realistic proportions (hidden 1024, 8 layers, 8 experts
 * top-2, intermediate 2816, vocab 32000; ~2.3 GB fp32), converted once per weight dtype and cached
 * under .cache/bench.
 */
import { access, readFile, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { BUNDLE_VERSION, type UnitWeightDType } from '@unimoe/shared/bundle/manifest';
import { makeTiny } from '@unimoe/shared/tiny/make-tiny';
import { convertCheckpoint, dtypeOptions } from '@unimoe/shared/convert/convert';

export const BENCH_DIR = fileURLToPath(new URL('../../.cache/bench/', import.meta.url));
export const REALISTIC = { hidden: 1024, layers: 8, heads: 16, kvHeads: 16, experts: 8, intermediate: 2816, vocab: 32000 } as const;

const exists = (p: string) => access(p).then(() => true, () => false);

/** A cached bundle of the current format version (an older one is converted again). */
async function isCurrentBundle(bundleDir: string): Promise<boolean> {
  const text = await readFile(`${bundleDir}/manifest.json`, 'utf8').catch(() => null);
  return text !== null && (JSON.parse(text) as { version?: number }).version === BUNDLE_VERSION;
}

/** `dtype` int8/int4: `convert --quant` with its default block size (float16 embedding table). */
export async function realisticBundle(log: (msg: string) => void = console.error, dtype: UnitWeightDType = 'float32'): Promise<string> {
  const checkpointDir = `${BENCH_DIR}unimoe-8e-h1024`;
  const bundleDir = `${BENCH_DIR}unimoe-8e-h1024${dtype === 'float32' ? '' : `-${dtype}`}.bundle`;
  if (await isCurrentBundle(bundleDir)) return bundleDir;
  await rm(bundleDir, { recursive: true, force: true });
  if (!(await exists(`${checkpointDir}/config.json`))) {
    log(`writing the benchmark checkpoint (${JSON.stringify(REALISTIC)}) to ${checkpointDir}`);
    await makeTiny(checkpointDir, { layout: 'unimoe-8e', seed: 3, ...REALISTIC });
  }
  log(`converting it to ${bundleDir}`);
  await convertCheckpoint({ checkpointDir, bundleDir, name: 'bench-8e', ...dtypeOptions(dtype) });
  return bundleDir;
}
