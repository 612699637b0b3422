/**
 * The model store: where a bundle's manifest and unit files come from, a local directory or an S3
 * prefix (`s3://bucket/prefix`). Every file handed out is checked against the sha256 the manifest
 * records, so a worker never runs a unit it cannot vouch for. Node-only.
 */
import { resolve } from 'node:path';
import type { Manifest, UnitSpec } from '../bundle/manifest';
import { ModelStoreError } from './errors';
import { readManifest } from '../bundle/load';
import { sha256File } from '../bundle/sha256-file';
import { openS3Store, parseS3Uri } from './s3';

export interface ModelStore {
  /** Where the bundle lives, as given. */
  readonly uri: string;
  readManifest(): Promise<Manifest>;
  /** A local path to the unit's file, whose sha256 matches the manifest. */
  unitPath(unit: UnitSpec): Promise<string>;
  /** A local path to any bundle file (tokenizer, ...) with the given sha256. */
  filePath(file: string, sha256: string): Promise<string>;
  close(): void;
}

export interface ModelStoreOptions {
  /** Where S3 downloads are kept, keyed by sha256; default UNIMOE_CACHE_DIR or ./.cache/units. */
  cacheDir?: string;
}

export async function openModelStore(uri: string, opts: ModelStoreOptions = {}): Promise<ModelStore> {
  if (uri.startsWith('s3://')) {
    const cacheDir = resolve(opts.cacheDir ?? (process.env.UNIMOE_CACHE_DIR || './.cache/units'));
    return openS3Store(parseS3Uri(uri), cacheDir);
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri)) throw new ModelStoreError(`${uri}: unsupported model store (use a directory or s3://bucket/prefix)`);
  return openDirectoryStore(uri);
}

function openDirectoryStore(dir: string): ModelStore {
  const root = resolve(dir);
  const verified = async (file: string, sha256: string, label: string) => {
    const path = resolve(root, file);
    let actual: string;
    try {
      actual = await sha256File(path);
    } catch (err) {
      throw new ModelStoreError(`${path}: cannot read ${label} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    if (actual !== sha256) throw new ModelStoreError(`${path}: ${label} sha256 ${actual} does not match the manifest's ${sha256}`);
    return path;
  };
  return {
    uri: dir,
    async readManifest() {
      try {
        return await readManifest(root);
      } catch (err) {
        throw new ModelStoreError((err as Error).message);
      }
    },
    unitPath: (unit) => verified(unit.file, unit.sha256, `unit ${unit.name}`),
    filePath: (file, sha256) => verified(file, sha256, file),
    close() {},
  };
}
