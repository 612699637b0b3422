/**
 * `pnpm fidelity [--block-size N] [checkpoint-dir ...]`: per checkpoint layout (default: the committed
 * torch-written fixtures of every layout the converter reads) and per bundle dtype, the logits error
 * against the float64 reference and greedy agreement over 64 tokens, as a Markdown table.
 */
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { loadReferenceModel } from '../reference/reference-model';
import { modelFixture } from '../helpers/fixtures';
import { makeTempDir } from '../helpers/tmp';
import { printTable } from '../bench/table';
import { BUNDLE_DTYPES, convertAs, FIDELITY_STEPS, measureFidelity, referenceContinuation } from './fidelity';

async function main() {
  const { values, positionals } = parseArgs({ options: { 'block-size': { type: 'string' } }, allowPositionals: true });
  const blockSize = values['block-size'] === undefined ? undefined : Number(values['block-size']);
  const checkpoints = positionals.length > 0 ? positionals : (['unimoe-4e', 'unimoe-8e', 'mixtral'] as const).map(modelFixture);
  const tmp = await makeTempDir('fidelity');
  const rows: (string | number)[][] = [];
  try {
    for (const [i, checkpointDir] of checkpoints.entries()) {
      const expected = referenceContinuation(await loadReferenceModel(checkpointDir));
      for (const dtype of BUNDLE_DTYPES) {
        const bundleDir = join(tmp.dir, `${i}-${dtype}.bundle`);
        const manifest = await convertAs(checkpointDir, bundleDir, dtype, blockSize);
        const f = await measureFidelity(bundleDir, expected);
        rows.push([manifest.config.layout, manifest.quant ? `${dtype} (block ${manifest.quant.blockSize})` : dtype, f.logitsRelError.toExponential(2), `${f.argmaxAgreement}/${FIDELITY_STEPS}`, `${f.freeRunPrefix}/${FIDELITY_STEPS}`]);
      }
    }
  } finally {
    await tmp.cleanup();
  }
  printTable(
    `Fidelity vs the float64 reference (${FIDELITY_STEPS} greedy tokens)`,
    ['layout', 'dtype', 'logits rel. error (max)', 'argmax agreement', 'free-run identical prefix'],
    rows,
  );
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
