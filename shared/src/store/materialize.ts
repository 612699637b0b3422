/**
 * A bundle as a local directory, whatever store it lives in: for code (the embedded engine, the
 * tokenizer loader) that reads bundle files by path. Directories are used as they are; an S3 bundle
 * is fetched into the sha256-keyed cache (every file verified; only the units asked for) and laid out as symlinks under
 * `<cache>/bundles/<manifest sha256>/`, with manifest.json written last so a half-built one is never used.
 */
import { createHash } from 'node:crypto';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { UnitSpec } from '../bundle/manifest';
import { openModelStore, type ModelStoreOptions } from './store';

export interface MaterializeOptions extends ModelStoreOptions {
  /** Only these units are fetched (default: all); e.g. a split-mode edge needs no expert files. */
  units?: (unit: UnitSpec) => boolean;
}

export async function materializeBundle(uri: string, opts: MaterializeOptions = {}): Promise<string> {
  if (!uri.startsWith('s3://')) return uri;
  const cacheDir = resolve(opts.cacheDir ?? (process.env.UNIMOE_CACHE_DIR || './.cache/units'));
  const store = await openModelStore(uri, { cacheDir });
  try {
    const manifest = await store.readManifest();
    const manifestText = `${JSON.stringify(manifest, null, 2)}\n`;
    const dir = join(cacheDir, 'bundles', createHash('sha256').update(manifestText).digest('hex'));
    const files: Array<[string, string]> = [];
    for (const unit of manifest.units.filter(opts.units ?? (() => true))) files.push([unit.file, await store.unitPath(unit)]);
    files.push([manifest.tokenizer.file, await store.filePath(manifest.tokenizer.file, manifest.tokenizer.sha256)]);
    for (const [file, cached] of files) {
      const link = join(dir, file);
      await mkdir(dirname(link), { recursive: true });
      await rm(link, { force: true });
      await symlink(cached, link);
    }
    await writeFile(join(dir, 'manifest.json'), manifestText);
    return dir;
  } finally {
    store.close();
  }
}
