/**
 * Just enough of the zip format to read `torch.save` archives lazily: the central directory
 * (zip64 included) and each stored entry's data offset. Entries are never inflated.
 * (The npm zip readers either load whole entries into memory or want a stream per entry; torch
 * archives need byte ranges of stored entries, which is a few dozen lines on top of a FileHandle.)
 */
import { readExactly, type OpenFile } from './file-bytes';
import { CheckpointError } from './types';

export interface ZipEntry {
  name: string;
  /** 0 = stored; anything else is compressed. */
  method: number;
  flags: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const EOCD_SIGNATURE = 0x06054b50;
const EOCD64_LOCATOR_SIGNATURE = 0x07064b50;
const EOCD64_SIGNATURE = 0x06064b50;
const CENTRAL_SIGNATURE = 0x02014b50;
const LOCAL_SIGNATURE = 0x04034b50;
const EOCD_BYTES = 22;
const MAX_COMMENT = 0xffff;

export async function readZipDirectory(file: OpenFile): Promise<Map<string, ZipEntry>> {
  const fail = (m: string) => new CheckpointError(m, file.path);
  const { cdOffset, cdSize, count, cdEnd } = await findCentralDirectory(file);
  if (cdOffset + cdSize > cdEnd) throw fail(`zip central directory (${cdOffset}+${cdSize}) overlaps its end record: corrupt`);
  const cd = await readExactly(file, cdOffset, cdSize, 'zip central directory');
  const view = new DataView(cd.buffer);
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || view.getUint32(p, true) !== CENTRAL_SIGNATURE) {
      throw fail(`zip central directory entry ${i} of ${count} is malformed: corrupt archive`);
    }
    const nameLength = view.getUint16(p + 28, true);
    const extraLength = view.getUint16(p + 30, true);
    const commentLength = view.getUint16(p + 32, true);
    if (p + 46 + nameLength + extraLength + commentLength > cd.length) throw fail(`zip central directory entry ${i} runs past the directory`);
    const name = new TextDecoder().decode(cd.subarray(p + 46, p + 46 + nameLength));
    let size = view.getUint32(p + 24, true);
    let compressedSize = view.getUint32(p + 20, true);
    let localHeaderOffset = view.getUint32(p + 42, true);
    // zip64 extended information: only the fields saturated at 0xFFFFFFFF are present, in this order.
    if (size === 0xffffffff || compressedSize === 0xffffffff || localHeaderOffset === 0xffffffff) {
      const extra = findExtraField(view, p + 46 + nameLength, extraLength, 0x0001);
      if (!extra) throw fail(`zip entry ${name} needs a zip64 extra field but has none`);
      let q = extra.start;
      const next = () => {
        if (q + 8 > extra.end) throw fail(`zip entry ${name} has a short zip64 extra field`);
        const v = readUint64(view, q, fail);
        q += 8;
        return v;
      };
      if (size === 0xffffffff) size = next();
      if (compressedSize === 0xffffffff) compressedSize = next();
      if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
    }
    if (localHeaderOffset + 30 + nameLength + compressedSize > cdOffset) {
      throw fail(`zip entry ${name} (${compressedSize} bytes at ${localHeaderOffset}) extends past the data area: corrupt archive`);
    }
    entries.set(name, {
      name,
      method: view.getUint16(p + 10, true),
      flags: view.getUint16(p + 8, true),
      compressedSize,
      size,
      localHeaderOffset,
    });
    p += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

/** Where a stored (uncompressed) entry's bytes begin; reads its local header. */
export async function storedEntryDataOffset(file: OpenFile, entry: ZipEntry): Promise<number> {
  if (entry.flags & 1) throw new CheckpointError(`zip entry ${entry.name} is encrypted`, file.path);
  if (entry.method !== 0) {
    throw new CheckpointError(
      `zip entry ${entry.name} is compressed (method ${entry.method}); torch.save archives store entries uncompressed`,
      file.path,
    );
  }
  const header = await readExactly(file, entry.localHeaderOffset, 30, `zip local header of ${entry.name}`);
  const view = new DataView(header.buffer);
  if (view.getUint32(0, true) !== LOCAL_SIGNATURE) {
    throw new CheckpointError(`zip local header of ${entry.name} is missing at byte ${entry.localHeaderOffset}: corrupt archive`, file.path);
  }
  const start = entry.localHeaderOffset + 30 + view.getUint16(26, true) + view.getUint16(28, true);
  if (start + entry.size > file.size) {
    throw new CheckpointError(`zip entry ${entry.name} data (${entry.size} bytes at ${start}) runs past the end of the file`, file.path);
  }
  return start;
}

/** The end record lies in the last 22 + 65535 bytes; scan backwards for one whose comment fits exactly. */
async function findCentralDirectory(file: OpenFile) {
  const fail = (m: string) => new CheckpointError(m, file.path);
  const missing = () =>
    fail('no zip end-of-central-directory record: the file is truncated or is not a zip archive');
  if (file.size < EOCD_BYTES) throw missing();
  const tailLength = Math.min(file.size, EOCD_BYTES + MAX_COMMENT);
  const tailStart = file.size - tailLength;
  const tail = await readExactly(file, tailStart, tailLength, 'zip end record');
  const view = new DataView(tail.buffer);
  let at = -1;
  for (let i = tailLength - EOCD_BYTES; i >= 0; i--) {
    if (view.getUint32(i, true) === EOCD_SIGNATURE && i + EOCD_BYTES + view.getUint16(i + 20, true) === tailLength) {
      at = i;
      break;
    }
  }
  if (at < 0) throw missing();
  let count = view.getUint16(at + 10, true);
  let cdSize = view.getUint32(at + 12, true);
  let cdOffset = view.getUint32(at + 16, true);
  let cdEnd = tailStart + at;
  const locatorAt = at - 20;
  if (locatorAt >= 0 && view.getUint32(locatorAt, true) === EOCD64_LOCATOR_SIGNATURE) {
    const eocd64Offset = readUint64(view, locatorAt + 8, fail);
    const record = await readExactly(file, eocd64Offset, 56, 'zip64 end record');
    const r = new DataView(record.buffer);
    if (r.getUint32(0, true) !== EOCD64_SIGNATURE) throw fail(`zip64 end record missing at byte ${eocd64Offset}: corrupt archive`);
    count = readUint64(r, 32, fail);
    cdSize = readUint64(r, 40, fail);
    cdOffset = readUint64(r, 48, fail);
    cdEnd = eocd64Offset;
  } else if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    throw fail('zip end record asks for zip64 but the zip64 locator is missing: truncated or corrupt archive');
  }
  return { count, cdSize, cdOffset, cdEnd };
}

function findExtraField(view: DataView, start: number, length: number, id: number) {
  for (let p = start; p + 4 <= start + length; ) {
    const size = view.getUint16(p + 2, true);
    if (view.getUint16(p, true) === id) return { start: p + 4, end: Math.min(p + 4 + size, start + length) };
    p += 4 + size;
  }
  return undefined;
}

function readUint64(view: DataView, at: number, fail: (m: string) => Error): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fail(`zip64 field ${v} is out of range: corrupt archive`);
  return Number(v);
}
