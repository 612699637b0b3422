/**
 * Quantized bundles end to end: converted from the torch-written fixtures, run by the engine, against
 * the float64 reference along its 64-token greedy continuation (tests/fidelity/fidelity.ts). The bounds
 * are the documented ones (README "Weight dtypes"): tiny random models have near-tied logits and routers,
 * so one flipped expert shows in the max; the median is the typical step.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readManifest, verifyUnit } from '@unimoe/shared/bundle/load';
import { loadReferenceModel } from '../reference/reference-model';
import { modelFixture } from '../helpers/fixtures';
import { makeTempDir } from '../helpers/tmp';
import { convertAs, FIDELITY_STEPS, measureFidelity, referenceContinuation } from './fidelity';

const BOUNDS = {
  int8: { median: 5e-2, max: 5e-1, argmax: 58 },
  int4: { median: 5e-1, max: 1, argmax: 28 },
} as const;

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
beforeAll(async () => {
  tmp = await makeTempDir('quantized');
});
afterAll(() => tmp.cleanup());

describe.each(['unimoe-8e', 'mixtral'] as const)('%s quantized bundles vs the float64 reference', (layout) => {
  it.each(['int8', 'int4'] as const)('%s: manifest, checksums, logits and greedy agreement within the documented bounds', async (dtype) => {
    const checkpointDir = modelFixture(layout);
    const bundleDir = join(tmp.dir, `${layout}-${dtype}.bundle`);
    await convertAs(checkpointDir, bundleDir, dtype);
    const manifest = await readManifest(bundleDir);
    expect(manifest.quant).toEqual({ dtype, blockSize: 32, accuracyLevel: 4 });
    expect(manifest.dtype).toBe('float16');
    for (const unit of manifest.units) {
      expect(unit.weightDType, unit.name).toBe(unit.kind === 'embed' ? 'float16' : dtype);
      await verifyUnit(bundleDir, unit);
    }

    const f = await measureFidelity(bundleDir, referenceContinuation(await loadReferenceModel(checkpointDir)));
    const bound = BOUNDS[dtype];
    expect(f.logitsRelError.median).toBeLessThan(bound.median);
    expect(f.logitsRelError.max).toBeLessThan(bound.max);
    expect(f.argmaxAgreement).toBeGreaterThanOrEqual(bound.argmax);
    expect(f.argmaxAgreement).toBeLessThanOrEqual(FIDELITY_STEPS);
  });
});
