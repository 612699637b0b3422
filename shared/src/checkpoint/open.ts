/** Open a checkpoint file, a set of files, or a Hugging Face-style checkpoint directory (sharded or not). */
import { readFile, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { openForReading, readExactly } from './file-bytes';
import { openSafetensors } from './safetensors';
import { checkpointFromEntries } from './tensor-table';
import { openTorchZip } from './torch-zip';
import type { Checkpoint } from './types';
import { CheckpointError } from './types';

export type CheckpointStem = 'model' | 'adapter_model';

/** A safetensors file or a torch.save zip (`.bin`/`.pt`/`.pth`), told apart by content, not just name. */
export async function openCheckpointFile(path: string): Promise<Checkpoint> {
  const file = await openForReading(resolve(path));
  let head: Uint8Array;
  try {
    head = await readExactly(file, 0, Math.min(9, file.size), 'file start');
  } finally {
    await file.handle.close();
  }
  if (head[0] === 0x50 && head[1] === 0x4b) return openTorchZip(file.path); // "PK": zip
  if (head[0] === 0x80 && head[1] === 0x02) {
    throw new CheckpointError('legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with torch >= 1.6', file.path);
  }
  if (file.path.endsWith('.safetensors') || head[8] === 0x7b /* "{" opens the JSON header */) return openSafetensors(file.path);
  throw new CheckpointError('unrecognized checkpoint format: expected safetensors or a torch.save zip archive', file.path);
}

/** Several files as one checkpoint; a tensor name in two files is an error. */
export async function openCheckpointFiles(paths: string[]): Promise<Checkpoint> {
  if (paths.length === 0) throw new CheckpointError('no checkpoint files given', '(none)');
  const source = paths.length === 1 ? resolve(paths[0]) : `${resolve(paths[0])} (+${paths.length - 1} more)`;
  return mergeCheckpoints(source, await openAll(paths.map((p) => resolve(p))));
}

/**
 * A checkpoint directory: `<stem>.safetensors.index.json`, `<stem>.safetensors`,
 * `pytorch_model.bin.index.json` / `pytorch_model.bin` (stem `model`) or `adapter_model.bin`.
 * safetensors wins when both exist, as in transformers.
 */
export async function openCheckpoint(dir: string, opts: { stem?: CheckpointStem } = {}): Promise<Checkpoint> {
  const root = resolve(dir);
  const stem = opts.stem ?? 'model';
  const torchStem = stem === 'model' ? 'pytorch_model' : 'adapter_model';
  const candidates = [`${stem}.safetensors.index.json`, `${stem}.safetensors`, `${torchStem}.bin.index.json`, `${torchStem}.bin`];
  if (!(await isDirectory(root))) throw new CheckpointError('not a directory', root);
  for (const name of candidates) {
    const path = join(root, name);
    if (!(await isFile(path))) continue;
    return name.endsWith('.index.json') ? openSharded(path) : openCheckpointFile(path);
  }
  throw new CheckpointError(`no checkpoint found; looked for ${candidates.join(', ')}`, root);
}

/** A sharded checkpoint from its index: every shard exists and holds the tensors the index puts there. */
async function openSharded(indexPath: string): Promise<Checkpoint> {
  const weightMap = await readWeightMap(indexPath);
  const dir = resolve(indexPath, '..');
  const shardNames = [...new Set(weightMap.values())].sort();
  for (const shard of shardNames) {
    if (!(await isFile(join(dir, shard)))) {
      const tensor = [...weightMap].find(([, s]) => s === shard)![0];
      throw new CheckpointError(`index places tensors in shard ${shard}, which does not exist`, indexPath, tensor);
    }
  }
  const shards = await openAll(shardNames.map((s) => join(dir, s)));
  try {
    const byName = new Map(shardNames.map((s, i) => [s, shards[i]]));
    for (const [tensor, shard] of weightMap) {
      if (!byName.get(shard)!.has(tensor)) {
        throw new CheckpointError(`index places the tensor in shard ${shard}, but that shard does not contain it`, indexPath, tensor);
      }
    }
  } catch (err) {
    await Promise.all(shards.map((s) => s.close()));
    throw err;
  }
  return mergeCheckpoints(indexPath, shards);
}

async function readWeightMap(indexPath: string): Promise<Map<string, string>> {
  let index: unknown;
  try {
    index = JSON.parse(await readFile(indexPath, 'utf8'));
  } catch (err) {
    throw new CheckpointError(`index is not readable JSON: ${(err as Error).message}`, indexPath);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new CheckpointError('index has no weight_map object', indexPath);
  }
  const out = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    // Shards must sit beside the index: a path would let an index reach arbitrary files.
    if (typeof shard !== 'string' || shard !== basename(shard) || shard === '..' || shard === '.') {
      throw new CheckpointError(`weight_map entry ${JSON.stringify(shard)} is not a shard file name`, indexPath, tensor);
    }
    out.set(tensor, shard);
  }
  return out;
}

async function openAll(paths: string[]): Promise<Checkpoint[]> {
  const opened: Checkpoint[] = [];
  try {
    for (const path of paths) opened.push(await openCheckpointFile(path));
    return opened;
  } catch (err) {
    await Promise.all(opened.map((c) => c.close()));
    throw err;
  }
}

/** One checkpoint over `parts`; closes them all if they cannot be merged (e.g. a duplicate name). */
async function mergeCheckpoints(source: string, parts: Checkpoint[]): Promise<Checkpoint> {
  const closeAll = async () => {
    await Promise.all(parts.map((p) => p.close()));
  };
  const entries = parts.flatMap((part) => part.names().map((name) => ({ info: part.info(name), read: () => part.read(name) })));
  try {
    return checkpointFromEntries(source, entries, closeAll);
  } catch (err) {
    await closeAll();
    throw err;
  }
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}
