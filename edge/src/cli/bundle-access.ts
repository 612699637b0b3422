/** Opening a bundle for the CLI: its manifest, tokenizer and a generation engine (embedded or split). */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readManifest } from '@unimoe/shared/bundle/load';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { loadTokenizer, type TextTokenizer } from '@unimoe/shared/tokenizer/index';
import { createEngine } from '../engine/engine';
import type { GenerationEngine } from '../engine/types';
import { resolveBundle, withoutExperts } from './resolve-bundle';
import { wireModel } from '@unimoe/shared/wire/subjects';

/** The bundle's tokenizer, of the kind its manifest records (SentencePiece for bundles that record none). */
export async function openTokenizer(bundleDir: string, manifest: Manifest): Promise<TextTokenizer> {
  const path = join(bundleDir, manifest.tokenizer.file);
  const bytes = new Uint8Array(await readFile(path));
  try {
    return loadTokenizer(manifest.tokenizer.kind ?? 'sentencepiece', bytes);
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`);
  }
}

export interface OpenedBundle {
  bundleDir: string;
  manifest: Manifest;
  engine: GenerationEngine;
}

/** With `natsUrl` the experts run on pools over NATS; without, every unit runs in this process. */
export async function openEngine(bundle: string, opts: { natsUrl?: string } = {}): Promise<OpenedBundle> {
  const bundleDir = await resolveBundle(bundle, opts.natsUrl ? withoutExperts : undefined);
  const manifest = await readManifest(bundleDir);
  if (!opts.natsUrl) return { bundleDir, manifest, engine: await createEngine({ bundleDir }) };
  const { createNatsExpertBackend } = await import('../dispatch/nats-expert-backend');
  const experts = await createNatsExpertBackend({ natsUrl: opts.natsUrl, model: wireModel(manifest), hidden: manifest.config.hidden });
  const engine = await createEngine({ bundleDir, experts });
  // The engine leaves a backend it was given to its owner: close both together.
  const close = engine.close.bind(engine);
  engine.close = async () => {
    await close();
    await experts.close();
  };
  return { bundleDir, manifest, engine };
}
