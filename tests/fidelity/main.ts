/**
 * `pnpm fidelity [--block-size N] [checkpoint-dir ...]`: per checkpoint layout (default: the committed
 * torch-written fixtures of every layout the converter reads) and per bundle dtype, the logits error
 * against the float64 reference and greedy agreement over 64 tokens, as a Markdown table. The quantized
 * dtypes also get a row at accuracy_level 0 (float32 compute over the same blocks): the difference is
 * what the int8 activations of the fast default path cost.
 */
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { loadReferenceModel } from '../reference/reference-model';
import { modelFixture } from '../helpers/fixtures';
import { makeTempDir } from '../helpers/tmp';
import { printTable } from '../bench/table';
import { BUNDLE_DTYPES, convertAs, isQuantized, type BundleDType, FIDELITY_STEPS, measureFidelity, referenceContinuation } from './fidelity';

async function main() {
  const { values, positionals } = parseArgs({ options: { 'block-size': { type: 'string' } }, allowPositionals: true });
  const blockSize = values['block-size'] === undefined ? undefined : Number(values['block-size']);
  const checkpoints = positionals.length > 0 ? positionals : (['unimoe-4e', 'unimoe-8e', 'mixtral'] as const).map(modelFixture);
  const tmp = await makeTempDir('fidelity');
  const rows: (string | number)[][] = [];
  try {
    for (const [i, checkpointDir] of checkpoints.entries()) {
      const expected = referenceContinuation(await loadReferenceModel(checkpointDir));
      const variants = BUNDLE_DTYPES.flatMap((dtype): { dtype: BundleDType; accuracyLevel?: number }[] => (isQuantized(dtype) ? [{ dtype }, { dtype, accuracyLevel: 0 }] : [{ dtype }]));
      for (const [j, { dtype, accuracyLevel }] of variants.entries()) {
        const bundleDir = join(tmp.dir, `${i}-${j}.bundle`);
        const manifest = await convertAs(checkpointDir, bundleDir, dtype, { blockSize, accuracyLevel });
        const f = await measureFidelity(bundleDir, expected);
        const q = manifest.quant;
        rows.push([manifest.config.layout, q ? `${dtype} (block ${q.blockSize}, accuracy ${q.accuracyLevel})` : dtype, f.logitsRelError.median.toExponential(1), f.logitsRelError.max.toExponential(1), `${f.argmaxAgreement}/${FIDELITY_STEPS}`, `${f.freeRunPrefix}/${FIDELITY_STEPS}`]);
      }
    }
  } finally {
    await tmp.cleanup();
  }
  printTable(
    `Fidelity vs the float64 reference (${FIDELITY_STEPS} greedy tokens)`,
    ['layout', 'dtype', 'logits rel. error (median)', 'logits rel. error (max)', 'argmax agreement', 'free-run identical prefix'],
    rows,
  );
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
