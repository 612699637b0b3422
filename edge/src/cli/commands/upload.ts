/**
 * `unimoe upload <bundle-dir> s3://bucket/prefix`: puts a bundle into an S3-compatible model store (MinIO, S3)
 * with a progress bar; resumable (rerun it after an interruption) and every file read back and sha256-checked.
 * Endpoint and credentials as for reading: S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.
 */
import { uploadBundle } from '@unimoe/shared/store/s3-upload';
import { CliError, parseCommand } from '../args';
import { formatBytes, ProgressBar } from '../progress';

const USAGE = 'unimoe upload <bundle-dir> s3://bucket/prefix';

export async function run(argv: string[]): Promise<number> {
  const { positionals } = parseCommand(argv, {}, USAGE);
  if (positionals.length !== 2) throw new CliError(`expected <bundle-dir> and s3://bucket/prefix\nusage: ${USAGE}`);
  const [bundleDir, uri] = positionals as [string, string];
  if (!uri.startsWith('s3://')) throw new CliError(`${uri}: the destination must be an s3://bucket/prefix URI\nusage: ${USAGE}`);

  let bar: ProgressBar | undefined;
  const result = await uploadBundle(bundleDir, uri, {
    events: {
      plan(files) {
        const todo = files.filter((f) => !f.skip);
        const bytes = todo.reduce((sum, f) => sum + f.bytes, 0);
        const kept = files.length - todo.length;
        console.error(`[upload] ${bundleDir} -> ${uri}: ${todo.length} file(s), ${formatBytes(bytes)} to send${kept ? `; ${kept} already there (same sha256)` : ''}`);
        if (todo.length) bar = new ProgressBar(bytes);
      },
      sent: (bytes) => bar?.add(bytes),
    },
  });
  bar?.finish();
  console.error(`[upload] ${result.uploaded.length} file(s) uploaded and read back with matching sha256, ${result.skipped.length} already there`);
  console.log(result.uri);
  return 0;
}
