/** A bundle argument as a local directory: used as is, or an S3 URI fetched by the model store. */
import { stat } from 'node:fs/promises';
import type { UnitSpec } from '@unimoe/shared/bundle/manifest';
import { CliError } from './args';

/** Units this process runs: an S3 bundle fetches only these (default all); the manifest and tokenizer always. */
export type UnitFilter = (unit: UnitSpec) => boolean;
export const noUnits: UnitFilter = () => false;
/** Everything but the experts: what an edge with pools behind NATS runs itself. */
export const withoutExperts: UnitFilter = (u) => u.kind !== 'expert';

export async function resolveBundle(bundle: string, units?: UnitFilter): Promise<string> {
  if (bundle.startsWith('s3://')) {
    const { materializeBundle } = await import('@unimoe/shared/store/materialize');
    return materializeBundle(bundle, { units });
  }
  const info = await stat(bundle).catch(() => null);
  if (!info?.isDirectory()) throw new CliError(`${bundle}: not a bundle directory (run \`unimoe convert\` first)`);
  return bundle;
}
