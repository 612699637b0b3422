/** The S3 side of the model store: objects under a prefix, downloaded into a sha256-keyed cache. */
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ModelStore } from './store';
import { ModelStoreError } from './errors';
import { parseManifest } from '../bundle/load';
import { sha256File } from '../bundle/sha256-file';

export interface S3Location {
  bucket: string;
  /** Key prefix without trailing slash; '' for the bucket root. */
  prefix: string;
}

export function parseS3Uri(uri: string): S3Location {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri);
  if (!m) throw new ModelStoreError(`${uri}: not an s3://bucket/prefix URI`);
  return { bucket: m[1], prefix: m[2].replace(/\/+$/, '') };
}

/**
 * Endpoint from S3_ENDPOINT (MinIO, test servers) with path-style addressing; region and credentials
 * come from the SDK's standard chain (AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).
 */
export function s3ClientFromEnv(): S3Client {
  const endpoint = process.env.S3_ENDPOINT || undefined;
  return new S3Client({
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    region: process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1',
    // S3-compatible servers do not all send CRC checksums; our own sha256 check is the integrity gate.
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestChecksumCalculation: 'WHEN_REQUIRED',
  });
}

export function openS3Store(loc: S3Location, cacheDir: string, client: S3Client = s3ClientFromEnv()): ModelStore {
  const key = (file: string) => (loc.prefix ? `${loc.prefix}/${file}` : file);
  const url = (file: string) => `s3://${loc.bucket}/${key(file)}`;

  const getObject = async (file: string) => {
    try {
      const res = await client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: key(file) }));
      if (!res.Body) throw new Error('empty response body');
      return res.Body;
    } catch (err) {
      const e = err as Error & { name?: string };
      const why = e.name === 'NoSuchKey' ? 'no such object' : e.name === 'NoSuchBucket' ? 'no such bucket' : `${e.name}: ${e.message}`;
      throw new ModelStoreError(`${url(file)}: ${why}`);
    }
  };

  const cached = async (file: string, sha256: string, label: string): Promise<string> => {
    const path = join(cacheDir, `${sha256}${file.match(/\.[A-Za-z0-9]+$/)?.[0] ?? ''}`);
    if (await exists(path)) {
      if ((await sha256File(path)) === sha256) return path;
      await rm(path, { force: true }); // a corrupt cache entry is refetched, never trusted
    }
    await mkdir(cacheDir, { recursive: true });
    const part = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.part`;
    const hash = createHash('sha256');
    try {
      const body = (await getObject(file)) as Readable;
      body.on('data', (chunk: Buffer) => hash.update(chunk));
      await pipeline(body, createWriteStream(part));
      const actual = hash.digest('hex');
      if (actual !== sha256) throw new ModelStoreError(`${url(file)}: ${label} sha256 ${actual} does not match the manifest's ${sha256}`);
      await rename(part, path); // atomic: concurrent workers sharing a cache never see half a file
      return path;
    } catch (err) {
      await rm(part, { force: true });
      if (err instanceof ModelStoreError) throw err;
      throw new ModelStoreError(`${url(file)}: download of ${label} failed (${(err as Error).message})`);
    }
  };

  return {
    uri: `s3://${loc.bucket}/${loc.prefix}`,
    async readManifest() {
      const body = await getObject('manifest.json');
      const text = await body.transformToString('utf8');
      try {
        return parseManifest(text, url('manifest.json'));
      } catch (err) {
        throw new ModelStoreError((err as Error).message);
      }
    },
    unitPath: (unit) => cached(unit.file, unit.sha256, `unit ${unit.name}`),
    filePath: (file, sha256) => cached(file, sha256, file),
    close: () => client.destroy(),
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
