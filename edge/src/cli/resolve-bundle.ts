/** A bundle argument is a local directory (S3 URIs are handled by the model store). */
import { stat } from 'node:fs/promises';
import { CliError } from './args';

export async function resolveBundle(bundle: string): Promise<string> {
  if (bundle.startsWith('s3://')) {
    const { materializeBundle } = await import('@unimoe/shared/store/materialize');
    return materializeBundle(bundle);
  }
  const info = await stat(bundle).catch(() => null);
  if (!info?.isDirectory()) throw new CliError(`${bundle}: not a bundle directory (run \`unimoe convert\` first)`);
  return bundle;
}
