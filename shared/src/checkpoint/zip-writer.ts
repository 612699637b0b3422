/**
 * Writes a zip of stored (uncompressed) entries with each entry's data aligned to 64 bytes, the way
 * PyTorch's archive writer does (padding goes in a local-header extra field), so readers can map tensors.
 * Entries are produced one at a time, so only one tensor's bytes are in memory.
 */
import { open } from 'node:fs/promises';
import { crc32 } from 'node:zlib';

export interface ZipWriteEntry {
  /** ASCII path inside the archive. */
  name: string;
  data: () => Uint8Array;
}

const ALIGNMENT = 64;
/** Extra-field id PyTorch uses for its alignment padding ("FB"). */
const PADDING_FIELD_ID = 0x4246;
/** 1980-01-01, the earliest DOS date (0 is not a valid date). */
const DOS_DATE = (1 << 5) | 1;
/** Past this the archive needs zip64 records, which this writer does not produce. */
const MAX_ZIP32_OFFSET = 0xfffffffe;

export async function writeStoredZip(path: string, entries: readonly ZipWriteEntry[]): Promise<void> {
  if (entries.length > 0xffff) throw new Error(`${path}: ${entries.length} entries need zip64, which this writer does not produce`);
  const handle = await open(path, 'w');
  try {
    let position = 0;
    const write = async (bytes: Uint8Array) => {
      await handle.write(bytes, 0, bytes.length, position);
      position += bytes.length;
    };
    const central: Uint8Array[] = [];
    for (const entry of entries) {
      const name = new TextEncoder().encode(entry.name);
      const data = entry.data();
      const offset = position;
      const padding = (ALIGNMENT - ((offset + 30 + name.length + 4) % ALIGNMENT)) % ALIGNMENT;
      if (offset + 30 + name.length + 4 + padding + data.length > MAX_ZIP32_OFFSET) {
        throw new Error(`${path}: archive would exceed 4 GiB, which needs zip64; write safetensors or more shards instead`);
      }
      const crc = crc32(data);
      const local = new DataView(new ArrayBuffer(30 + name.length + 4 + padding));
      local.setUint32(0, 0x04034b50, true);
      fillCommonHeader(local, 4, crc, data.length, name.length);
      local.setUint16(28, 4 + padding, true);
      new Uint8Array(local.buffer).set(name, 30);
      local.setUint16(30 + name.length, PADDING_FIELD_ID, true);
      local.setUint16(32 + name.length, padding, true);
      await write(new Uint8Array(local.buffer));
      await write(data);

      const record = new DataView(new ArrayBuffer(46 + name.length));
      record.setUint32(0, 0x02014b50, true);
      record.setUint16(4, 20, true); // version made by
      fillCommonHeader(record, 6, crc, data.length, name.length);
      record.setUint32(42, offset, true);
      new Uint8Array(record.buffer).set(name, 46);
      central.push(new Uint8Array(record.buffer));
    }
    const cdOffset = position;
    for (const record of central) await write(record);
    const end = new DataView(new ArrayBuffer(22));
    end.setUint32(0, 0x06054b50, true);
    end.setUint16(8, entries.length, true);
    end.setUint16(10, entries.length, true);
    end.setUint32(12, position - cdOffset, true);
    end.setUint32(16, cdOffset, true);
    await write(new Uint8Array(end.buffer));
  } finally {
    await handle.close();
  }
}

/** The fields local and central headers share, from "version needed" to the name length. */
function fillCommonHeader(view: DataView, at: number, crc: number, size: number, nameLength: number): void {
  view.setUint16(at, 20, true); // version needed
  view.setUint16(at + 2, 0, true); // flags
  view.setUint16(at + 4, 0, true); // method: stored
  view.setUint16(at + 6, 0, true); // time
  view.setUint16(at + 8, DOS_DATE, true);
  view.setUint32(at + 10, crc, true);
  view.setUint32(at + 14, size, true); // compressed
  view.setUint32(at + 18, size, true); // uncompressed
  view.setUint16(at + 22, nameLength, true);
}
