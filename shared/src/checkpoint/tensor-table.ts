/** The `Checkpoint` interface over a list of named tensors, each with its own lazy reader. */
import type { Checkpoint, TensorInfo } from './types';
import { CheckpointError } from './types';

export interface TensorEntry {
  info: TensorInfo;
  read(): Promise<Float32Array>;
}

/**
 * `source` names the file or directory in "not found" errors; `close` releases what the entries read from.
 * Duplicate names are an error: which one wins would be a guess.
 */
export function checkpointFromEntries(source: string, entries: TensorEntry[], close: () => Promise<void>): Checkpoint {
  const byName = new Map<string, TensorEntry>();
  for (const entry of entries) {
    const previous = byName.get(entry.info.name);
    if (previous) {
      throw new CheckpointError(`tensor appears twice (in ${previous.info.file} and ${entry.info.file})`, source, entry.info.name);
    }
    byName.set(entry.info.name, entry);
  }
  let closed = false;
  const entryFor = (name: string): TensorEntry => {
    const entry = byName.get(name);
    if (!entry) throw new CheckpointError('no such tensor in the checkpoint', source, name);
    return entry;
  };
  return {
    names: () => [...byName.keys()],
    has: (name) => byName.has(name),
    info: (name) => {
      const { info } = entryFor(name);
      return { ...info, shape: [...info.shape] };
    },
    read: async (name) => {
      if (closed) throw new CheckpointError('read after close()', source, name);
      return entryFor(name).read();
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await close();
    },
  };
}
