/**
 * The write side of the S3 model store: a bundle directory -> `s3://bucket/prefix`. Every file is checked
 * against the manifest before it leaves, and read back and hashed after it lands. Resumable at two levels:
 * a file whose object already carries the same sha256 (in its metadata) and size is skipped, and a big
 * file's multipart upload keeps a journal of acknowledged parts, so a rerun sends only the missing parts.
 * The journal lives on the uploader's side because not every S3-compatible server can list parts.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { MANIFEST_FILE } from '../bundle/load';
import { ModelStoreError } from './errors';
import { parseS3Uri, s3ClientFromEnv } from './s3';
import { openModelStore } from './store';

/** S3's smallest allowed part (except the last) is 5 MiB; 16 MiB keeps a 10,000-part upload above 150 GiB. */
export const DEFAULT_PART_BYTES = 16 * 2 ** 20;

export interface UploadEvents {
  /** Once, before the first byte: what will be sent (files already in place are not counted). */
  plan?(files: Array<{ file: string; bytes: number; skip: boolean }>): void;
  /** Bytes acknowledged by the server (parts resumed from the journal count at once). */
  sent?(bytes: number): void;
  /** A file's object was read back and its sha256 matched. */
  verified?(file: string): void;
}

export interface UploadOptions {
  client?: S3Client;
  /** Where multipart journals are kept; default UNIMOE_CACHE_DIR/uploads or ./.cache/uploads. */
  journalDir?: string;
  partBytes?: number;
  events?: UploadEvents;
}

export interface UploadResult {
  uri: string;
  uploaded: string[];
  skipped: string[];
}

interface LocalFile {
  file: string;
  path: string;
  bytes: number;
  sha256: string;
}

interface Journal {
  uploadId: string;
  sha256: string;
  partBytes: number;
  /** Part number -> ETag, for parts the server acknowledged. */
  parts: Record<string, string>;
}

export async function uploadBundle(bundleDir: string, uri: string, opts: UploadOptions = {}): Promise<UploadResult> {
  const loc = parseS3Uri(uri);
  const client = opts.client ?? s3ClientFromEnv();
  const partBytes = opts.partBytes ?? DEFAULT_PART_BYTES;
  const journalDir = resolve(opts.journalDir ?? join(process.env.UNIMOE_CACHE_DIR || './.cache', 'uploads'));
  const key = (file: string) => (loc.prefix ? `${loc.prefix}/${file}` : file);
  const url = (file: string) => `s3://${loc.bucket}/${key(file)}`;
  const s3 = async <T>(file: string, what: string, call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (err) {
      if (err instanceof ModelStoreError) throw err;
      const e = err as Error;
      throw new ModelStoreError(`${url(file)}: ${what} failed (${e.name}: ${e.message})`);
    }
  };

  try {
    const files = await localFiles(bundleDir);
    await ensureBucket(client, loc.bucket);

    const inPlace = new Set<string>();
    for (const f of files) if (await objectMatches(client, loc.bucket, key(f.file), f)) inPlace.add(f.file);
    opts.events?.plan?.(files.map((f) => ({ file: f.file, bytes: f.bytes, skip: inPlace.has(f.file) })));

    const uploaded: string[] = [];
    // manifest.json is last in `files`: a reader never sees a manifest whose units are not all there.
    for (const f of files) {
      if (inPlace.has(f.file)) continue;
      if (f.bytes <= partBytes) {
        const body = await readFile(f.path);
        await s3(f.file, 'upload', () =>
          client.send(new PutObjectCommand({ Bucket: loc.bucket, Key: key(f.file), Body: body, Metadata: { sha256: f.sha256 } })),
        );
        opts.events?.sent?.(f.bytes);
      } else {
        await s3(f.file, 'multipart upload', () => uploadMultipart(client, loc.bucket, key(f.file), f, partBytes, journalDir, opts.events));
      }
      const actual = await s3(f.file, 'read-back', () => remoteSha256(client, loc.bucket, key(f.file)));
      if (actual !== f.sha256) throw new ModelStoreError(`${url(f.file)}: read back with sha256 ${actual}, the local file has ${f.sha256}`);
      opts.events?.verified?.(f.file);
      uploaded.push(f.file);
    }
    return { uri: `s3://${loc.bucket}/${loc.prefix}`, uploaded, skipped: [...inPlace] };
  } finally {
    if (!opts.client) client.destroy();
  }
}

/** The bundle's units and tokenizer (each verified against the manifest), then manifest.json itself. */
async function localFiles(bundleDir: string): Promise<LocalFile[]> {
  const store = await openModelStore(resolve(bundleDir));
  const manifest = await store.readManifest();
  const files: LocalFile[] = [];
  for (const unit of manifest.units) files.push({ file: unit.file, path: await store.unitPath(unit), bytes: unit.bytes, sha256: unit.sha256 });
  const tok = manifest.tokenizer;
  const tokPath = await store.filePath(tok.file, tok.sha256);
  files.push({ file: tok.file, path: tokPath, bytes: (await stat(tokPath)).size, sha256: tok.sha256 });
  const manifestPath = join(resolve(bundleDir), MANIFEST_FILE);
  const text = await readFile(manifestPath);
  files.push({ file: MANIFEST_FILE, path: manifestPath, bytes: text.length, sha256: createHash('sha256').update(text).digest('hex') });
  return files;
}

async function ensureBucket(client: S3Client, bucket: string): Promise<void> {
  try {
    await client.send(new HeadBucketCommand({ Bucket: bucket }));
    return;
  } catch (err) {
    const e = err as Error & { $metadata?: { httpStatusCode?: number } };
    if (e.$metadata?.httpStatusCode !== 404 && e.name !== 'NotFound') throw new ModelStoreError(`s3://${bucket}: cannot reach the bucket (${e.name}: ${e.message})`);
  }
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (err) {
    const e = err as Error;
    if (e.name !== 'BucketAlreadyOwnedByYou' && e.name !== 'BucketAlreadyExists') throw new ModelStoreError(`s3://${bucket}: cannot create the bucket (${e.name}: ${e.message})`);
  }
}

/** An object already holds this file when its recorded sha256 and its size both match (it was read back when written). */
async function objectMatches(client: S3Client, bucket: string, key: string, f: LocalFile): Promise<boolean> {
  try {
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return head.Metadata?.sha256 === f.sha256 && head.ContentLength === f.bytes;
  } catch {
    return false;
  }
}

async function remoteSha256(client: S3Client, bucket: string, key: string): Promise<string> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const hash = createHash('sha256');
  for await (const chunk of res.Body as Readable) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function uploadMultipart(client: S3Client, bucket: string, key: string, f: LocalFile, partBytes: number, journalDir: string, events?: UploadEvents): Promise<void> {
  const journalPath = join(journalDir, `${createHash('sha256').update(`${bucket}/${key}`).digest('hex')}.json`);
  try {
    await sendParts(client, bucket, key, f, partBytes, journalPath, events);
  } catch (err) {
    if ((err as Error).name !== 'NoSuchUpload') throw err;
    // The server dropped the journal's upload (expired, or aborted by a lifecycle rule): start it again once.
    await rm(journalPath, { force: true });
    await sendParts(client, bucket, key, f, partBytes, journalPath, events);
  }
}

async function sendParts(client: S3Client, bucket: string, key: string, f: LocalFile, partBytes: number, journalPath: string, events?: UploadEvents): Promise<void> {
  const journalDir = dirname(journalPath);
  let journal = await readJournal(journalPath);
  if (journal && (journal.sha256 !== f.sha256 || journal.partBytes !== partBytes)) {
    // A different file (or part size) was being sent to this key: that upload cannot be continued.
    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: journal.uploadId })).catch(() => {});
    journal = undefined;
  }
  if (!journal) {
    const created = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, Metadata: { sha256: f.sha256 } }));
    journal = { uploadId: created.UploadId!, sha256: f.sha256, partBytes, parts: {} };
    await mkdir(journalDir, { recursive: true });
    await writeFile(journalPath, JSON.stringify(journal));
  }
  const count = Math.ceil(f.bytes / partBytes);
  const partSize = (n: number) => Math.min(partBytes, f.bytes - (n - 1) * partBytes);
  const resumed = Object.keys(journal.parts).reduce((sum, n) => sum + partSize(Number(n)), 0);
  if (resumed) events?.sent?.(resumed);

  const fh = await open(f.path, 'r');
  try {
    for (let n = 1; n <= count; n++) {
      if (journal.parts[n]) continue;
      const body = Buffer.alloc(partSize(n));
      await fh.read(body, 0, body.length, (n - 1) * partBytes);
      const part = await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: journal.uploadId, PartNumber: n, Body: body }));
      journal.parts[n] = part.ETag!;
      await writeFile(journalPath, JSON.stringify(journal));
      events?.sent?.(body.length);
    }
  } finally {
    await fh.close();
  }
  const parts = Array.from({ length: count }, (_, i) => ({ PartNumber: i + 1, ETag: journal.parts[i + 1] }));
  await client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: journal.uploadId, MultipartUpload: { Parts: parts } }));
  await rm(journalPath, { force: true });
}

async function readJournal(path: string): Promise<Journal | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Journal;
  } catch {
    return undefined;
  }
}
