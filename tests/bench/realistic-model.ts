/**
 * The benchmark model: make-tiny weights at realistic proportions (hidden 1024, 8 layers, 8 experts
 * top-2, intermediate 2816, vocab 32000; ~2.3 GB fp32), converted once per weight dtype and cached
 * under .cache/bench (converted again when the format version or the unit graphs' sources change).
 */
import { createHash } from 'node:crypto';
import { access, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { BUNDLE_VERSION, type UnitWeightDType } from '@unimoe/shared/bundle/manifest';
import { makeTiny } from '@unimoe/shared/tiny/make-tiny';
import { convertCheckpoint, dtypeOptions } from '@unimoe/shared/convert/convert';

export const BENCH_DIR = fileURLToPath(new URL('../../.cache/bench/', import.meta.url));
export const REALISTIC = { hidden: 1024, layers: 8, heads: 16, kvHeads: 16, experts: 8, intermediate: 2816, vocab: 32000 } as const;

const exists = (p: string) => access(p).then(() => true, () => false);

/** The weight dtype a benchmark runs on: BENCH_DTYPE (default float32), one of `allowed`. */
export function benchDType(allowed: readonly UnitWeightDType[]): UnitWeightDType {
  const dtype = (process.env.BENCH_DTYPE ?? 'float32') as UnitWeightDType;
  if (!allowed.includes(dtype)) throw new Error(`BENCH_DTYPE must be ${allowed.join(', ')}, got ${dtype}`);
  return dtype;
}

/** The sources that decide the unit graphs: a cached bundle built by other graphs is converted again. */
const GRAPH_SOURCES = ['../../shared/src/convert/units/', '../../shared/src/convert/quantize.ts', '../../shared/src/onnx/graph.ts'];
const STAMP = 'graph-sources.sha256';

async function graphSourcesHash(): Promise<string> {
  const hash = createHash('sha256');
  for (const rel of GRAPH_SOURCES) {
    const path = fileURLToPath(new URL(rel, import.meta.url));
    const files = rel.endsWith('/') ? (await readdir(path)).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts')).sort().map((f) => path + f) : [path];
    for (const f of files) hash.update(f.slice(path.length)).update(await readFile(f));
  }
  return hash.digest('hex');
}

/** A cached bundle of the current format version and unit graphs (an older one is converted again). */
async function isCurrentBundle(bundleDir: string, sourcesHash: string): Promise<boolean> {
  const text = await readFile(`${bundleDir}/manifest.json`, 'utf8').catch(() => null);
  const stamp = await readFile(`${bundleDir}/${STAMP}`, 'utf8').catch(() => null);
  return text !== null && (JSON.parse(text) as { version?: number }).version === BUNDLE_VERSION && stamp === sourcesHash;
}

/** `dtype` int8/int4: `convert --quant` with its default block size (float16 embedding table). */
export async function realisticBundle(log: (msg: string) => void = console.error, dtype: UnitWeightDType = 'float32'): Promise<string> {
  const checkpointDir = `${BENCH_DIR}unimoe-8e-h1024`;
  const bundleDir = `${BENCH_DIR}unimoe-8e-h1024${dtype === 'float32' ? '' : `-${dtype}`}.bundle`;
  const sourcesHash = await graphSourcesHash();
  if (await isCurrentBundle(bundleDir, sourcesHash)) return bundleDir;
  await rm(bundleDir, { recursive: true, force: true });
  if (!(await exists(`${checkpointDir}/config.json`))) {
    log(`writing the benchmark checkpoint (${JSON.stringify(REALISTIC)}) to ${checkpointDir}`);
    await makeTiny(checkpointDir, { layout: 'unimoe-8e', seed: 3, ...REALISTIC });
  }
  log(`converting it to ${bundleDir}`);
  await convertCheckpoint({ checkpointDir, bundleDir, name: 'bench-8e', ...dtypeOptions(dtype) });
  await writeFile(`${bundleDir}/${STAMP}`, sourcesHash);
  return bundleDir;
}
