/** Positioned reads from an open file that fail loudly (naming the file) instead of returning short. */
import { open, type FileHandle } from 'node:fs/promises';
import { CheckpointError } from './types';

export interface OpenFile {
  path: string;
  handle: FileHandle;
  size: number;
}

export async function openForReading(path: string): Promise<OpenFile> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw new CheckpointError(`cannot open: ${(err as Error).message}`, path);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new CheckpointError('not a regular file', path);
    return { path, handle, size: stat.size };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** Exactly `length` bytes at `position`; `what` says what was being read, for the error message. */
export async function readExactly(
  file: OpenFile,
  position: number,
  length: number,
  what: string,
  tensor?: string,
): Promise<Uint8Array> {
  if (position < 0 || position + length > file.size) {
    throw new CheckpointError(
      `${what} lies at bytes ${position}..${position + length}, past the end of the file (${file.size} bytes): truncated or corrupt`,
      file.path,
      tensor,
    );
  }
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await file.handle.read(out, done, length - done, position + done);
    if (bytesRead === 0) {
      throw new CheckpointError(`${what}: file ended after ${done} of ${length} bytes (truncated while open?)`, file.path, tensor);
    }
    done += bytesRead;
  }
  return out;
}
