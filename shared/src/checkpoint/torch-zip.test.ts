import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openForReading, readExactly } from './file-bytes';
import { EXPECTED, FIXTURES, expectCheckpointError, expectSameTensors } from './test-fixtures';
import { pickleStateDict } from './torch-pickle-writer';
import { openTorchZip } from './torch-zip';
import { writeTorchZip } from './write';
import { readZipDirectory, storedEntryDataOffset } from './zip';
import { writeStoredZip } from './zip-writer';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'torch-zip-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The entries of a zip (read with our reader), to rebuild variants of a real torch file. */
async function zipEntries(path: string): Promise<Map<string, Uint8Array>> {
  const file = await openForReading(path);
  try {
    const out = new Map<string, Uint8Array>();
    for (const entry of (await readZipDirectory(file)).values()) {
      out.set(entry.name, await readExactly(file, await storedEntryDataOffset(file, entry), entry.size, entry.name));
    }
    return out;
  } finally {
    await file.handle.close();
  }
}

describe('openTorchZip on files written by torch.save', () => {
  it('reads float32, float16, bfloat16, float64, int, bool, 0-d and Parameter tensors', async () => {
    const checkpoint = await openTorchZip(`${FIXTURES}dtypes.pt`);
    await expectSameTensors(checkpoint, EXPECTED['dtypes.pt']);
    await checkpoint.close();
  });

  it('applies storage offsets and strides: transposed, sliced and shared-storage views', async () => {
    const checkpoint = await openTorchZip(`${FIXTURES}views.pt`);
    await expectSameTensors(checkpoint, EXPECTED['views.pt']);
    await checkpoint.close();
  });

  it('reads a zip64 archive (every size and offset in zip64 records)', async () => {
    const checkpoint = await openTorchZip(`${FIXTURES}views_zip64.pt`);
    await expectSameTensors(checkpoint, EXPECTED['views.pt']);
    await checkpoint.close();
  });
});

describe('openTorchZip refuses bad files, naming file and tensor', () => {
  const cdOffset = (bytes: Buffer) => bytes.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  const truncatedMessage = 'no zip end-of-central-directory record: the file is truncated or is not a zip archive';

  it('a zip cut in the middle', async () => {
    const bytes = await readFile(`${FIXTURES}dtypes.pt`);
    const path = join(dir, 'cut-middle.pt');
    await writeFile(path, bytes.subarray(0, bytes.length >> 1));
    await expectCheckpointError(openTorchZip(path), { file: path, message: truncatedMessage });
  });

  it('a zip cut just before its central directory', async () => {
    const bytes = await readFile(`${FIXTURES}dtypes.pt`);
    const path = join(dir, 'cut-cd.pt');
    await writeFile(path, bytes.subarray(0, cdOffset(bytes)));
    await expectCheckpointError(openTorchZip(path), { file: path, message: truncatedMessage });
  });

  it('a central directory pointing at entries past the data area', async () => {
    const bytes = Buffer.from(await readFile(`${FIXTURES}views.pt`));
    const first = cdOffset(bytes);
    bytes.writeUInt32LE(0x7fff0000, first + 42); // local header offset of the first entry
    const path = join(dir, 'bad-offset.pt');
    await writeFile(path, bytes);
    await expectCheckpointError(openTorchZip(path), {
      file: path,
      message: /^zip entry views\/data\.pkl \(\d+ bytes at 2147418112\) extends past the data area: corrupt archive$/,
    });
  });

  it('compressed entries', async () => {
    const path = `${FIXTURES}views_deflated.pt`;
    await expectCheckpointError(openTorchZip(path), {
      file: path,
      message: 'zip entry views/data.pkl is compressed (method 8); torch.save archives store entries uncompressed',
    });
  });

  it('a pickle that calls a forbidden global (os.system) is refused, not executed', async () => {
    const marker = '/tmp/unimoe-checkpoint-fixture-pwned';
    await rm(marker, { force: true });
    const path = `${FIXTURES}forbidden_global.pt`;
    await expectCheckpointError(openTorchZip(path), {
      file: path,
      message: 'data.pkl: refusing global posix.system: only tensor-rebuilding globals are allowed in a checkpoint',
    });
    expect(existsSync(marker)).toBe(false);
  });

  it('a nested dict instead of a flat state dict', async () => {
    const path = `${FIXTURES}nested.pt`;
    await expectCheckpointError(openTorchZip(path), {
      file: path,
      message:
        "data.pkl: entry 'state_dict' is a dict, not a tensor: only a flat state dict of tensors is supported" +
        ' (extract the inner state dict and save that)',
    });
  });

  it('a zip that is not a torch archive', async () => {
    const path = join(dir, 'plain.zip');
    await writeStoredZip(path, [{ name: 'readme.txt', data: () => new TextEncoder().encode('hi') }]);
    await expectCheckpointError(openTorchZip(path), {
      file: path,
      message: 'zip archive has no <root>/data.pkl, so it is not a torch.save file (entries: readme.txt)',
    });
  });

  it('a malformed pickle', async () => {
    const path = join(dir, 'garbage-pickle.pt');
    await writeStoredZip(path, [{ name: 'archive/data.pkl', data: () => new Uint8Array([0x80, 0x02, 0x7d, 0x28, 0x58]) }]);
    await expectCheckpointError(openTorchZip(path), { file: path, message: /^data\.pkl: malformed pickle: / });
  });

  it('a storage entry missing from the archive', async () => {
    const source = join(dir, 'two.pt');
    await writeTorchZip(source, [
      { name: 'a', dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
      { name: 'b', dtype: 'F32', shape: [2], data: new Float32Array([3, 4]) },
    ]);
    const entries = await zipEntries(source);
    entries.delete('archive/data/1');
    const path = join(dir, 'missing-storage.pt');
    await writeStoredZip(path, [...entries].map(([name, bytes]) => ({ name, data: () => bytes })));
    await expectCheckpointError(openTorchZip(path), {
      file: path,
      tensor: 'b',
      message: 'storage archive/data/1 is missing from the archive',
    });
  });

  it('a storage shorter than its declared size', async () => {
    const path = join(dir, 'short-storage.pt');
    const pickle = pickleStateDict([{ name: 'w', dtype: 'F32', shape: [4, 4], storageKey: '0' }]);
    await writeStoredZip(path, [
      { name: 'archive/data.pkl', data: () => pickle },
      { name: 'archive/data/0', data: () => new Uint8Array(8) },
    ]);
    await expectCheckpointError(openTorchZip(path), {
      file: path,
      tensor: 'w',
      message: 'storage 0 is 8 bytes, but 16 F32 elements need 64',
    });
  });

  it('a big-endian archive', async () => {
    const entries = await zipEntries(`${FIXTURES}dtypes.pt`);
    const root = [...entries.keys()][0].split('/')[0];
    entries.set(`${root}/byteorder`, new TextEncoder().encode('big'));
    const path = join(dir, 'big-endian.pt');
    await writeStoredZip(path, [...entries].map(([name, bytes]) => ({ name, data: () => bytes })));
    await expectCheckpointError(openTorchZip(path), {
      file: path,
      message: 'byteorder is "big"; only little-endian checkpoints are supported',
    });
  });
});

describe('openTorchZip is lazy', () => {
  it('opening reads only the directory and data.pkl; read fetches only that tensor', async () => {
    const path = join(dir, 'big.pt');
    const bigCount = (50 * 1024 * 1024) / 4;
    await writeTorchZip(path, [
      { name: 'big', dtype: 'F32', shape: [bigCount], data: new Float32Array(bigCount).fill(0.25) },
      { name: 'small', dtype: 'BF16', shape: [3], data: new Float32Array([1, 2, 3]) },
    ]);
    const probe = await open(path, 'r');
    const read = vi.spyOn(Object.getPrototypeOf(probe), 'read');
    await probe.close();
    const bytesRead = () => read.mock.calls.reduce((a, call) => a + Number(call[2]), 0);
    try {
      const checkpoint = await openTorchZip(path);
      expect(bytesRead()).toBeLessThan(70_000); // the zip end-record search window plus a few hundred bytes
      read.mockClear();
      expect(Array.from(await checkpoint.read('small'))).toEqual([1, 2, 3]);
      expect(bytesRead()).toBe(30 + 6); // its local zip header, then 3 bfloat16s
      await checkpoint.close();
    } finally {
      read.mockRestore();
    }
  });
});
