/** Test-only helpers: the committed torch-made fixtures and a way to ask real torch about a file. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { Checkpoint } from './types';
import { CheckpointError } from './types';

export const FIXTURES = fileURLToPath(new URL('../../../tests/fixtures/checkpoints/', import.meta.url));

export interface ExpectedTensor {
  dtype: string;
  shape: number[];
  values: number[];
}

/** What torch read back from each fixture (see make_checkpoint_fixtures.py). */
export const EXPECTED: Record<string, Record<string, ExpectedTensor>> = JSON.parse(
  readFileSync(`${FIXTURES}expected.json`, 'utf8'),
);

const PYTHON = '/usr/bin/python3';

/** Why torch checks cannot run here, or undefined when `/usr/bin/python3 -c 'import torch'` works. */
export const torchMissingReason: string | undefined = (() => {
  const probe = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' });
  if (probe.error) return `${PYTHON} not runnable: ${probe.error.message}`;
  return probe.status === 0 ? undefined : `${PYTHON} cannot import torch: ${probe.stderr.trim().split('\n').pop()}`;
})();

/** Runs a Python script (argv after it) and parses the JSON it prints on its last line. */
export function runPythonJson(script: string, args: string[]): unknown {
  const result = spawnSync(PYTHON, ['-c', script, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (result.status !== 0) throw new Error(`python failed (${result.status}): ${result.stderr}`);
  const lines = result.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

/** The checkpoint holds exactly `expected` (names in order, dtypes, shapes, float32 values). */
export async function expectSameTensors(checkpoint: Checkpoint, expected: Record<string, ExpectedTensor>): Promise<void> {
  expect(checkpoint.names()).toEqual(Object.keys(expected));
  for (const [name, want] of Object.entries(expected)) {
    expect(checkpoint.info(name), name).toMatchObject({ name, dtype: want.dtype, shape: want.shape });
    expect(Array.from(await checkpoint.read(name)), name).toEqual(want.values.map(Math.fround));
  }
}

/** Rejects with a CheckpointError for exactly this file, tensor and message. */
export async function expectCheckpointError(
  promise: Promise<unknown>,
  want: { file: string; tensor?: string; message: string | RegExp },
): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CheckpointError);
  const { file, tensor, message } = err as CheckpointError;
  expect({ file, tensor }).toEqual({ file: want.file, tensor: want.tensor });
  const prefix = `${want.file}${want.tensor ? ` [${want.tensor}]` : ''}: `;
  if (typeof want.message === 'string') expect(message).toBe(prefix + want.message);
  else {
    expect(message.startsWith(prefix)).toBe(true);
    expect(message.slice(prefix.length)).toMatch(want.message);
  }
}
