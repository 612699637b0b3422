import { copyFile, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint, openCheckpointFile, openCheckpointFiles } from './open';
import { EXPECTED, FIXTURES, expectCheckpointError, expectSameTensors } from './test-fixtures';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'open-checkpoint-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function freshDir(name: string): Promise<string> {
  const path = join(dir, name);
  await mkdir(path, { recursive: true });
  return path;
}

describe('openCheckpointFile', () => {
  it('tells safetensors and torch zips apart by content', async () => {
    for (const name of ['dtypes.pt', 'dtypes.safetensors']) {
      const checkpoint = await openCheckpointFile(`${FIXTURES}${name}`);
      await expectSameTensors(checkpoint, EXPECTED[name]);
      await checkpoint.close();
    }
    const renamed = join(dir, 'really-safetensors.bin');
    await copyFile(`${FIXTURES}dtypes.safetensors`, renamed);
    const checkpoint = await openCheckpointFile(renamed);
    await expectSameTensors(checkpoint, EXPECTED['dtypes.safetensors']);
    await checkpoint.close();
  });

  it('refuses the legacy (non-zip) torch.save format and unknown files', async () => {
    const legacy = `${FIXTURES}legacy.pt`;
    await expectCheckpointError(openCheckpointFile(legacy), {
      file: legacy,
      message: 'legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with torch >= 1.6',
    });
    const text = join(dir, 'notes.bin');
    await writeFile(text, 'just some text, not weights');
    await expectCheckpointError(openCheckpointFile(text), {
      file: text,
      message: 'unrecognized checkpoint format: expected safetensors or a torch.save zip archive',
    });
  });
});

describe('openCheckpointFiles', () => {
  it('merges files into one checkpoint', async () => {
    const checkpoint = await openCheckpointFiles([`${FIXTURES}dtypes.pt`, `${FIXTURES}dtypes.safetensors`]);
    await expectSameTensors(checkpoint, { ...EXPECTED['dtypes.pt'], ...EXPECTED['dtypes.safetensors'] });
    expect(checkpoint.info('weight').file).toBe(`${FIXTURES}dtypes.safetensors`);
    expect(checkpoint.info('f32').file).toBe(`${FIXTURES}dtypes.pt`);
    await checkpoint.close();
  });

  it('refuses a tensor name that two files both hold', async () => {
    const copy = join(dir, 'copy.pt');
    await copyFile(`${FIXTURES}dtypes.pt`, copy);
    await expectCheckpointError(openCheckpointFiles([`${FIXTURES}dtypes.pt`, copy]), {
      file: `${FIXTURES}dtypes.pt (+1 more)`,
      tensor: 'f32',
      message: `tensor appears twice (in ${FIXTURES}dtypes.pt and ${copy})`,
    });
  });
});

describe('openCheckpoint on a directory', () => {
  it('reads a sharded pytorch_model-0000k-of-0000n.bin checkpoint through its index', async () => {
    const checkpoint = await openCheckpoint(`${FIXTURES}sharded`);
    await expectSameTensors(checkpoint, EXPECTED.sharded);
    expect(checkpoint.info('lm_head.weight').file).toBe(`${FIXTURES}sharded/pytorch_model-00002-of-00002.bin`);
    await checkpoint.close();
  });

  it('reads single-file checkpoints, preferring safetensors like transformers', async () => {
    const both = await freshDir('both');
    await copyFile(`${FIXTURES}dtypes.pt`, join(both, 'pytorch_model.bin'));
    await copyFile(`${FIXTURES}dtypes.safetensors`, join(both, 'model.safetensors'));
    const preferred = await openCheckpoint(both);
    await expectSameTensors(preferred, EXPECTED['dtypes.safetensors']);
    await preferred.close();

    const torchOnly = await freshDir('torch-only');
    await copyFile(`${FIXTURES}dtypes.pt`, join(torchOnly, 'pytorch_model.bin'));
    const checkpoint = await openCheckpoint(torchOnly);
    await expectSameTensors(checkpoint, EXPECTED['dtypes.pt']);
    await checkpoint.close();
  });

  it('opens adapter_model.bin with stem adapter_model', async () => {
    const adapter = await freshDir('adapter');
    await copyFile(`${FIXTURES}views.pt`, join(adapter, 'adapter_model.bin'));
    const checkpoint = await openCheckpoint(adapter, { stem: 'adapter_model' });
    await expectSameTensors(checkpoint, EXPECTED['views.pt']);
    await checkpoint.close();
    await expectCheckpointError(openCheckpoint(adapter), {
      file: adapter,
      message: 'no checkpoint found; looked for model.safetensors.index.json, model.safetensors, pytorch_model.bin.index.json, pytorch_model.bin',
    });
  });

  it('lists what it looked for in a directory without a checkpoint', async () => {
    const empty = await freshDir('empty');
    await expectCheckpointError(openCheckpoint(empty, { stem: 'adapter_model' }), {
      file: empty,
      message:
        'no checkpoint found; looked for adapter_model.safetensors.index.json, adapter_model.safetensors, adapter_model.bin.index.json, adapter_model.bin',
    });
    const missing = join(dir, 'no-such-dir');
    await expectCheckpointError(openCheckpoint(missing), { file: missing, message: 'not a directory' });
  });

  it('refuses an index pointing to a missing shard', async () => {
    const sharded = join(dir, 'missing-shard');
    await cp(`${FIXTURES}sharded`, sharded, { recursive: true });
    await rm(join(sharded, 'pytorch_model-00002-of-00002.bin'));
    await expectCheckpointError(openCheckpoint(sharded), {
      file: join(sharded, 'pytorch_model.bin.index.json'),
      tensor: 'lm_head.weight',
      message: 'index places tensors in shard pytorch_model-00002-of-00002.bin, which does not exist',
    });
  });

  it('refuses an index naming a tensor its shard does not hold', async () => {
    const sharded = join(dir, 'phantom-tensor');
    await cp(`${FIXTURES}sharded`, sharded, { recursive: true });
    const indexPath = join(sharded, 'pytorch_model.bin.index.json');
    const index = JSON.parse(await readFile(indexPath, 'utf8'));
    index.weight_map['model.layers.0.mlp.experts.0.w1.weight'] = 'pytorch_model-00001-of-00002.bin';
    await writeFile(indexPath, JSON.stringify(index));
    await expectCheckpointError(openCheckpoint(sharded), {
      file: indexPath,
      tensor: 'model.layers.0.mlp.experts.0.w1.weight',
      message: 'index places the tensor in shard pytorch_model-00001-of-00002.bin, but that shard does not contain it',
    });
  });

  it('refuses an index whose shard names are paths, or that is not an index', async () => {
    const sharded = await freshDir('escaping-index');
    const indexPath = join(sharded, 'model.safetensors.index.json');
    await writeFile(indexPath, JSON.stringify({ weight_map: { w: '../dtypes.safetensors' } }));
    await expectCheckpointError(openCheckpoint(sharded), {
      file: indexPath,
      tensor: 'w',
      message: 'weight_map entry "../dtypes.safetensors" is not a shard file name',
    });
    await writeFile(indexPath, JSON.stringify({ metadata: {} }));
    await expectCheckpointError(openCheckpoint(sharded), { file: indexPath, message: 'index has no weight_map object' });
    await writeFile(indexPath, '{"weight_map": ');
    await expectCheckpointError(openCheckpoint(sharded), { file: indexPath, message: /^index is not readable JSON: / });
  });
});
