/**
 * `unimoe upload`: a bundle into a real S3-compatible server (s3rver), read back through the model store a
 * worker uses; a rerun sends nothing; an interrupted multipart upload resumes with only the missing parts;
 * a corrupt local file is refused by name before anything is sent.
 */
import { spawn } from 'node:child_process';
import { appendFile, cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { S3Client } from '@aws-sdk/client-s3';
import { openModelStore } from '@unimoe/shared/store/store';
import { sha256File } from '@unimoe/shared/bundle/sha256-file';
import { uploadBundle } from '@unimoe/shared/store/s3-upload';
import { startS3Server, type S3Server } from '../helpers/s3-server';
import { REPO, tinyBundle } from '../split/cluster';

let bundle: Awaited<ReturnType<typeof tinyBundle>>;
let s3: S3Server;
let scratch: string;

/** The S3 commands the test client sent since the last reset, by name (UploadPartCommand, PutObjectCommand, ...). */
const counts: Record<string, number> = {};
const resetCounts = () => Object.keys(counts).forEach((k) => delete counts[k]);
const sends = () => (counts.UploadPartCommand ?? 0) + (counts.PutObjectCommand ?? 0);

function countCommands(client: S3Client): void {
  client.middlewareStack.add(
    (next, context) => (args) => {
      counts[context.commandName!] = (counts[context.commandName!] ?? 0) + 1;
      return next(args);
    },
    { step: 'initialize', name: 'countCommands' },
  );
}

beforeAll(async () => {
  bundle = await tinyBundle();
  s3 = await startS3Server([]); // no bucket: upload creates it
  countCommands(s3.client);
  Object.assign(process.env, s3.env);
  scratch = await mkdtemp(join(tmpdir(), 'unimoe-upload-'));
});
afterAll(async () => {
  await s3?.stop();
  await bundle?.cleanup();
  await rm(scratch, { recursive: true, force: true });
});

describe('unimoe upload', () => {
  it('puts every file, prints progress and the URI, and the model store reads it back verified', async () => {
    const run = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'edge/src/cli/main.ts'), 'upload', bundle.dir, 's3://models/tiny/v1'], {
        cwd: REPO,
        env: { ...process.env, UNIMOE_CACHE_DIR: join(scratch, 'cli-cache') },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout.trimEnd().split('\n').at(-1)).toBe('s3://models/tiny/v1');
    expect(run.stderr).toMatch(/\[#{24}\] 100%  .+ \/ .+  .+\/s  ETA 0s/);
    expect(run.stderr).toContain(`${bundle.manifest.units.length + 2} file(s) uploaded and read back with matching sha256`);

    const store = await openModelStore('s3://models/tiny/v1', { cacheDir: join(scratch, 'read-cache') });
    try {
      expect(await store.readManifest()).toEqual(bundle.manifest);
      for (const unit of bundle.manifest.units) expect(await sha256File(await store.unitPath(unit))).toBe(await sha256File(join(bundle.dir, unit.file)));
    } finally {
      store.close();
    }
  });

  it('sends nothing again when every object already holds the same sha256', async () => {
    resetCounts();
    let sent = 0;
    const result = await uploadBundle(bundle.dir, 's3://models/tiny/v1', { client: s3.client, events: { sent: (n) => (sent += n) } });
    expect(result.uploaded).toEqual([]);
    expect(result.skipped.length).toBe(bundle.manifest.units.length + 2);
    expect(sent).toBe(0);
    expect(sends()).toBe(0);
  });

  it('resumes an interrupted multipart upload with only the parts the server had not acknowledged', async () => {
    const partBytes = 4096;
    const files = [
      ...bundle.manifest.units.map((u) => u.bytes),
      (await readFile(join(bundle.dir, bundle.manifest.tokenizer.file))).length,
      (await readFile(join(bundle.dir, 'manifest.json'))).length,
    ];
    const requests = files.reduce((sum, bytes) => sum + (bytes <= partBytes ? 1 : Math.ceil(bytes / partBytes)), 0);
    const largest = bundle.manifest.units.reduce((a, b) => (b.bytes > a.bytes ? b : a));
    expect(Math.ceil(largest.bytes / partBytes)).toBeGreaterThan(3); // units really go in parts
    const journalDir = join(scratch, 'journal');

    resetCounts();
    let acks = 0;
    let sentBefore = 0;
    const interrupted = uploadBundle(bundle.dir, 's3://models/tiny/v2', {
      client: s3.client,
      partBytes,
      journalDir,
      events: {
        sent: (n) => {
          sentBefore += n;
          if (++acks === 5) throw new Error('connection lost');
        },
      },
    });
    await expect(interrupted).rejects.toThrow(/connection lost/);
    const requestsBefore = sends();
    expect(requestsBefore).toBe(5);

    resetCounts();
    let sent = 0;
    const result = await uploadBundle(bundle.dir, 's3://models/tiny/v2', { client: s3.client, partBytes, journalDir, events: { sent: (n) => (sent += n) } });
    // Every part and small file goes over the wire exactly once across both runs.
    expect(requestsBefore + sends()).toBe(requests);
    // Bytes: the resumed run reports the journal's parts at once; files finished before are skipped whole.
    const skippedBytes = result.skipped.reduce((sum, f) => sum + files[[...bundle.manifest.units.map((u) => u.file), bundle.manifest.tokenizer.file, 'manifest.json'].indexOf(f)]!, 0);
    expect(sent + skippedBytes).toBe(files.reduce((a, b) => a + b, 0));
    expect(result.uploaded.length + result.skipped.length).toBe(files.length);

    const store = await openModelStore('s3://models/tiny/v2', { cacheDir: join(scratch, 'read-cache-2') });
    try {
      for (const unit of bundle.manifest.units) expect(await sha256File(await store.unitPath(unit))).toBe(unit.sha256);
    } finally {
      store.close();
    }
  });

  it('refuses a bundle whose file does not match its manifest, naming the file, before sending it', async () => {
    const copy = join(scratch, 'corrupt');
    await cp(bundle.dir, copy, { recursive: true });
    const unit = bundle.manifest.units[1]!;
    await appendFile(join(copy, unit.file), 'x');
    await expect(uploadBundle(copy, 's3://models/tiny/bad', { client: s3.client })).rejects.toThrow(new RegExp(`${unit.file}: unit ${unit.name.replace('.', '\\.')} sha256`));
  });
});
