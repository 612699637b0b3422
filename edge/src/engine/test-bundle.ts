/** Test support: converts a committed tiny checkpoint (tests/fixtures/models/<layout>) into a temp bundle. */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';

const REPO = resolve(import.meta.dirname, '../../..');

export interface ExpectedPrompt {
  ids: number[];
  last_logits: number[];
  /** Greedy tokens from the Python reference (full recompute each step, no EOS stop). */
  greedy: number[];
}

export interface TestBundle {
  dir: string;
  expected: { prompts: ExpectedPrompt[] };
  cleanup(): Promise<void>;
}

export async function convertFixture(layout: string): Promise<TestBundle> {
  const fixture = join(REPO, 'tests/fixtures/models', layout);
  const work = await mkdtemp(join(tmpdir(), `unimoe-engine-${layout}-`));
  const dir = join(work, 'bundle');
  await convertCheckpoint({ checkpointDir: fixture, bundleDir: dir });
  const expected = JSON.parse(await readFile(join(fixture, 'expected.json'), 'utf8'));
  return { dir, expected, cleanup: () => rm(work, { recursive: true, force: true }) };
}
