import { mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openSafetensors } from './safetensors';
import { EXPECTED, FIXTURES, expectCheckpointError, expectSameTensors } from './test-fixtures';
import { writeSafetensors } from './write';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'safetensors-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A safetensors file from a header object and raw data, as the format spec lays it out. */
async function rawSafetensors(name: string, header: unknown, data = new Uint8Array(0), headerText = JSON.stringify(header)) {
  const json = Buffer.from(headerText);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  const path = join(dir, name);
  await writeFile(path, Buffer.concat([prefix, json, data]));
  return path;
}

describe('openSafetensors on a file written from the spec in Python', () => {
  const fixture = `${FIXTURES}dtypes.safetensors`;

  it('reads F32, F16, BF16 and I64 tensors as torch sees them', async () => {
    const checkpoint = await openSafetensors(fixture);
    await expectSameTensors(checkpoint, EXPECTED['dtypes.safetensors']);
    expect(checkpoint.info('weight').file).toBe(fixture);
    await checkpoint.close();
  });

  it('exposes __metadata__', async () => {
    const checkpoint = await openSafetensors(fixture);
    expect(checkpoint.metadata).toEqual({ format: 'pt', note: 'fixture' });
    await checkpoint.close();
  });

  it('lists tensors in data order, not JSON key order', async () => {
    const f32 = new Uint8Array(new Float32Array([1, 2]).buffer);
    const path = await rawSafetensors(
      'order.safetensors',
      { '10': { dtype: 'F32', shape: [1], data_offsets: [4, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } },
      f32,
    );
    const checkpoint = await openSafetensors(path);
    expect(checkpoint.names()).toEqual(['b', '10']);
    expect(Array.from(await checkpoint.read('10'))).toEqual([2]);
    await checkpoint.close();
  });
});

describe('openSafetensors refuses bad files, naming file and tensor', () => {
  it('truncated tensor data', async () => {
    const bytes = await readFile(`${FIXTURES}dtypes.safetensors`);
    const path = join(dir, 'truncated.safetensors');
    await writeFile(path, bytes.subarray(0, bytes.length - 3));
    const dataSize = bytes.length - 3 - 8 - Number(bytes.readBigUInt64LE(0));
    await expectCheckpointError(openSafetensors(path), {
      file: path,
      tensor: 'ids',
      message: `data ends at byte ${dataSize + 3} of the data section, which has only ${dataSize} bytes: file truncated`,
    });
  });

  it('corrupt JSON header', async () => {
    const path = await rawSafetensors('corrupt.safetensors', null, undefined, '{"w": {"dtype": "F32", "shape": [1], ');
    await expectCheckpointError(openSafetensors(path), { file: path, message: /^header is not valid UTF-8 JSON: / });
  });

  it('header that is JSON but not an object', async () => {
    const path = await rawSafetensors('array.safetensors', [1, 2]);
    await expectCheckpointError(openSafetensors(path), { file: path, message: 'header JSON is not an object of tensors' });
  });

  it('header length pointing past the end of the file', async () => {
    const path = join(dir, 'past-eof.safetensors');
    const bytes = Buffer.from(await readFile(`${FIXTURES}dtypes.safetensors`));
    bytes.writeBigUInt64LE(1n << 40n);
    await writeFile(path, bytes);
    await expectCheckpointError(openSafetensors(path), {
      file: path,
      message: `header length 1099511627776 points past the end of the file (${bytes.length} bytes): truncated or not safetensors`,
    });
  });

  it('oversized header (over 100 MB) without allocating it', async () => {
    const path = await rawSafetensors('huge-header.safetensors', {});
    const handle = await open(path, 'r+');
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(150_000_000n);
    await handle.write(length, 0, 8, 0);
    await handle.close();
    await truncate(path, 200_000_000); // sparse: no disk used
    await expectCheckpointError(openSafetensors(path), {
      file: path,
      message: 'header length 150000000 exceeds the 100000000-byte limit',
    });
  });

  it('file shorter than the length prefix', async () => {
    const path = join(dir, 'tiny.safetensors');
    await writeFile(path, Buffer.from([1, 2, 3]));
    await expectCheckpointError(openSafetensors(path), {
      file: path,
      message: 'file is 3 bytes, too short for the 8-byte safetensors header length',
    });
  });

  it('unknown and unsupported dtypes', async () => {
    const unknown = await rawSafetensors('unknown.safetensors', { w: { dtype: 'Q9', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1));
    await expectCheckpointError(openSafetensors(unknown), { file: unknown, tensor: 'w', message: 'unknown dtype "Q9"' });
    const fp8 = await rawSafetensors('fp8.safetensors', { w: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1));
    await expectCheckpointError(openSafetensors(fp8), {
      file: fp8,
      tensor: 'w',
      message: 'dtype F8_E4M3 is not supported (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)',
    });
  });

  it('data_offsets inconsistent with shape x dtype', async () => {
    const path = await rawSafetensors('mismatch.safetensors', { w: { dtype: 'F16', shape: [2, 3], data_offsets: [0, 8] } }, new Uint8Array(12));
    await expectCheckpointError(openSafetensors(path), {
      file: path,
      tensor: 'w',
      message: 'data_offsets [0, 8] span 8 bytes, but shape [2,3] of F16 needs 12',
    });
  });

  it('a bad shape and bad metadata', async () => {
    const shape = await rawSafetensors('shape.safetensors', { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4));
    await expectCheckpointError(openSafetensors(shape), { file: shape, tensor: 'w', message: 'shape [-1] is not a list of sizes' });
    const meta = await rawSafetensors('meta.safetensors', { __metadata__: { format: 1 } });
    await expectCheckpointError(openSafetensors(meta), { file: meta, message: '__metadata__.format is 1, not a string' });
  });

  it('a missing file', async () => {
    const path = join(dir, 'absent.safetensors');
    await expectCheckpointError(openSafetensors(path), { file: path, message: /^cannot open: ENOENT/ });
  });

  it('reading an absent tensor or after close', async () => {
    const checkpoint = await openSafetensors(`${FIXTURES}dtypes.safetensors`);
    expect(() => checkpoint.info('nope')).toThrow(`${FIXTURES}dtypes.safetensors [nope]: no such tensor in the checkpoint`);
    await checkpoint.close();
    await expectCheckpointError(checkpoint.read('weight'), {
      file: `${FIXTURES}dtypes.safetensors`,
      tensor: 'weight',
      message: 'read after close()',
    });
  });
});

describe('openSafetensors is lazy', () => {
  const bigCount = 50 * 1024 * 1024 / 4; // a 50 MB tensor
  let path: string;
  beforeAll(async () => {
    path = join(dir, 'big.safetensors');
    const big = new Float32Array(bigCount).fill(0.5);
    await writeSafetensors(path, [
      { name: 'big', dtype: 'F32', shape: [bigCount], data: big },
      { name: 'small', dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
    ]);
  });

  it('opening reads only the header; read fetches only that tensor', async () => {
    const probe = await open(path, 'r');
    const read = vi.spyOn(Object.getPrototypeOf(probe), 'read');
    await probe.close();
    try {
      const checkpoint = await openSafetensors(path);
      const bytesAtOpen = read.mock.calls.reduce((a, call) => a + Number(call[2]), 0);
      expect(bytesAtOpen).toBeLessThan(1024);
      read.mockClear();
      expect(Array.from(await checkpoint.read('small'))).toEqual([1, 2]);
      expect(read.mock.calls.reduce((a, call) => a + Number(call[2]), 0)).toBe(8);
      await checkpoint.close();
    } finally {
      read.mockRestore();
    }
  });

  it('returns the bytes on disk at read time, so nothing was loaded at open', async () => {
    const checkpoint = await openSafetensors(path);
    const handle = await open(path, 'r+');
    const { buffer: prefix } = await handle.read(Buffer.alloc(8), 0, 8, 0);
    const smallAt = 8 + Number(prefix.readBigUInt64LE(0)) + bigCount * 4;
    await handle.write(new Uint8Array(new Float32Array([7, 8]).buffer), 0, 8, smallAt);
    await handle.close();
    expect(Array.from(await checkpoint.read('small'))).toEqual([7, 8]);
    await checkpoint.close();
  });
});
