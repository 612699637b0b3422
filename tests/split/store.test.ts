/** The model store: a bundle directory and an S3 prefix on a real S3-compatible server (s3rver). */
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { materializeBundle } from '@unimoe/shared/store/materialize';
import { openModelStore } from '@unimoe/shared/store/store';
import { startS3Server, uploadDirectory, type S3Server } from '../helpers/s3-server';
import { tinyBundle } from './cluster';

let bundle: Awaited<ReturnType<typeof tinyBundle>>;
let s3: S3Server;
let scratch: string;
const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

beforeAll(async () => {
  bundle = await tinyBundle();
  s3 = await startS3Server(['models']);
  Object.assign(process.env, s3.env);
  await uploadDirectory(s3.client, 'models', 'tiny', bundle.dir);
  scratch = await mkdtemp(join(tmpdir(), 'unimoe-store-'));
});
afterAll(async () => {
  await s3?.stop();
  await bundle?.cleanup();
  await rm(scratch, { recursive: true, force: true });
});

describe('directory store', () => {
  it('reads the manifest and hands out verified unit paths', async () => {
    const store = await openModelStore(bundle.dir);
    const manifest = await store.readManifest();
    expect(manifest.units.map((u) => u.name)).toEqual(bundle.manifest.units.map((u) => u.name));
    const unit = manifest.units.find((u) => u.name === 'layer0.expert2')!;
    const path = await store.unitPath(unit);
    expect(path).toBe(join(bundle.dir, unit.file));
    expect(await sha256(path)).toBe(unit.sha256);
  });

  it('names the file and both hashes when a unit does not match the manifest', async () => {
    const store = await openModelStore(bundle.dir);
    const unit = { ...bundle.manifest.units.find((u) => u.name === 'layer1.expert0')!, sha256: 'ab'.repeat(32) };
    await expect(store.unitPath(unit)).rejects.toThrow(/layer1\.expert0\.onnx: unit layer1\.expert0 sha256 [0-9a-f]{64} does not match the manifest's (ab){32}/);
    await expect(store.unitPath({ ...unit, file: 'missing.onnx' })).rejects.toThrow(/missing\.onnx: cannot read unit layer1\.expert0 \(ENOENT\)/);
  });

  it('explains a missing or malformed manifest', async () => {
    await expect((await openModelStore(scratch)).readManifest()).rejects.toThrow(/manifest\.json: cannot read the bundle manifest \(ENOENT\)/);
    const bad = join(scratch, 'bad');
    await mkdir(bad);
    await writeFile(join(bad, 'manifest.json'), '{"format": "something-else"}');
    await expect((await openModelStore(bad)).readManifest()).rejects.toThrow(/format is "something-else", expected "unimoe-bundle"/);
    await writeFile(join(bad, 'manifest.json'), '{not json');
    await expect((await openModelStore(bad)).readManifest()).rejects.toThrow(/manifest\.json is not valid JSON/);
  });

  it('refuses other URI schemes', async () => {
    await expect(openModelStore('gs://bucket/x')).rejects.toThrow(/gs:\/\/bucket\/x: unsupported model store/);
  });
});

describe('S3 store', () => {
  it('downloads into a sha256-keyed cache, then serves from the cache without S3', async () => {
    const cacheDir = join(scratch, 'cache-a');
    const store = await openModelStore('s3://models/tiny', { cacheDir });
    const manifest = await store.readManifest();
    expect(manifest).toEqual(bundle.manifest);
    const unit = manifest.units.find((u) => u.name === 'layer1.expert3')!;
    const path = await store.unitPath(unit);
    expect(path).toBe(join(cacheDir, `${unit.sha256}.onnx`));
    expect(await sha256(path)).toBe(unit.sha256);

    // A corrupted cache entry is not trusted: it is fetched again.
    await writeFile(path, 'garbage');
    expect(await sha256(await store.unitPath(unit))).toBe(unit.sha256);

    // With the object gone from S3, the verified cache entry still serves.
    await s3.client.send(new DeleteObjectCommand({ Bucket: 'models', Key: `tiny/${unit.file}` }));
    expect(await store.unitPath(unit)).toBe(path);
    await expect(openModelStore('s3://models/tiny', { cacheDir: join(scratch, 'cache-b') }).then((s) => s.unitPath(unit))).rejects.toThrow(
      /s3:\/\/models\/tiny\/layer1\.expert3\.onnx: no such object/,
    );
    store.close();
    await uploadDirectory(s3.client, 'models', 'tiny', bundle.dir); // restore for the other tests
  });

  it('names the bucket and key when the manifest is not there', async () => {
    await expect((await openModelStore('s3://models/nothing-here')).readManifest()).rejects.toThrow(/s3:\/\/models\/nothing-here\/manifest\.json: no such object/);
    await expect((await openModelStore('s3://no-such-bucket/x')).readManifest()).rejects.toThrow(/s3:\/\/no-such-bucket\/x\/manifest\.json: no such bucket/);
  });

  it('materializes an S3 bundle as a local directory of verified files', async () => {
    const dir = await materializeBundle('s3://models/tiny', { cacheDir: join(scratch, 'cache-m') });
    expect(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'))).toEqual(bundle.manifest);
    const files = (await readdir(dir)).sort();
    expect(files).toEqual([...bundle.manifest.units.map((u) => u.file), bundle.manifest.tokenizer.file, 'manifest.json'].sort());
    for (const unit of bundle.manifest.units) expect(await sha256(await realpath(join(dir, unit.file)))).toBe(unit.sha256);
    expect(await sha256(join(dir, bundle.manifest.tokenizer.file))).toBe(bundle.manifest.tokenizer.sha256);
    expect(await materializeBundle(bundle.dir)).toBe(bundle.dir);
  });

  it('fetches only the units asked for (a split-mode edge downloads no expert)', async () => {
    const cacheDir = join(scratch, 'cache-dense');
    const dir = await materializeBundle('s3://models/tiny', { cacheDir, units: (u) => u.kind !== 'expert' });
    const dense = bundle.manifest.units.filter((u) => u.kind !== 'expert');
    expect(dense.length).toBeGreaterThan(0);
    expect((await readdir(dir)).sort()).toEqual([...dense.map((u) => u.file), bundle.manifest.tokenizer.file, 'manifest.json'].sort());
    // Nothing else was downloaded: the cache holds exactly the dense units and the tokenizer.
    const cached = (await readdir(cacheDir)).filter((f) => f !== 'bundles');
    expect(cached).toHaveLength(dense.length + 1);
  });
});
