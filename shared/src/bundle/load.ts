/** Reading a bundle directory: the validated manifest, and integrity checks of its unit files. */
import { readFile, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { BUNDLE_FORMAT, BUNDLE_VERSION, OLDEST_BUNDLE_VERSION, QUANT_BLOCK_SIZES, type Manifest, type UnitSpec } from './manifest';
import { sha256File } from './sha256-file';

const positiveInt = z.number().int().positive();
const tokenId = z.number().int().nonnegative();
/** Files stay inside the bundle: a manifest must not make a reader open arbitrary paths. */
const bundleFile = z
  .string()
  .min(1)
  .refine((f) => !isAbsolute(f) && !f.split(/[\\/]/).includes('..'), 'must be a path inside the bundle');
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'must be a lowercase hex sha256');

const tensorSpec = z.object({
  name: z.string().min(1),
  dtype: z.enum(['float32', 'int64']),
  shape: z.array(z.union([z.number().int().nonnegative(), z.string().min(1)])),
});

const unitSpec = z.object({
  name: z.string().min(1),
  kind: z.enum(['embed', 'attn', 'expert', 'head', 'vision', 'speech', 'audio']),
  layer: z.number().int().nonnegative().optional(),
  expert: z.number().int().nonnegative().optional(),
  file: bundleFile,
  bytes: positiveInt,
  sha256,
  weightDType: z.enum(['float32', 'float16', 'int8', 'int4']).optional(),
  inputs: z.array(tensorSpec),
  outputs: z.array(tensorSpec),
});

const imagePreprocessing = z.object({
  unit: z.string().min(1),
  padToSquare: z.boolean(),
  resize: positiveInt,
  crop: positiveInt,
  rescale: z.number().positive(),
  mean: z.tuple([z.number(), z.number(), z.number()]),
  std: z.tuple([z.number().positive(), z.number().positive(), z.number().positive()]),
});
const preprocessing = z.object({
  image: imagePreprocessing.optional(),
  video: z.object({ unit: z.string().min(1), frames: positiveInt }).optional(),
  speech: z
    .object({
      unit: z.string().min(1),
      sampleRate: positiveInt,
      melBins: positiveInt,
      nFft: positiveInt,
      hopLength: positiveInt,
      chunkSeconds: z.number().positive(),
      frames: positiveInt,
    })
    .optional(),
  audio: z
    .object({
      unit: z.string().min(1),
      sampleRate: positiveInt,
      melBins: positiveInt,
      frameLength: positiveInt,
      frameShift: positiveInt,
      chunkSamples: positiveInt,
      frames: positiveInt,
      mean: z.number(),
      std: z.number().positive(),
    })
    .optional(),
});
const modalityTokens = z.object({ image: positiveInt.optional(), video: positiveInt.optional(), speech: positiveInt.optional(), audio: positiveInt.optional() });

const modelConfig = z.object({
  layout: z.enum(['unimoe-4e', 'unimoe-8e', 'mixtral']),
  hidden: positiveInt,
  layers: positiveInt,
  heads: positiveInt,
  kvHeads: positiveInt,
  headDim: positiveInt,
  intermediate: positiveInt,
  vocab: positiveInt,
  rmsEps: z.number().positive(),
  ropeTheta: z.number().positive(),
  maxPositions: positiveInt,
  experts: positiveInt,
  routing: z.object({ topK: positiveInt, order: z.enum(['topk-softmax', 'softmax-topk']), renormalize: z.boolean() }),
  bos: tokenId,
  eos: tokenId,
  pad: tokenId,
});

const manifestSchema = z.object({
  format: z.literal(BUNDLE_FORMAT),
  version: z.union([z.literal(OLDEST_BUNDLE_VERSION), z.literal(BUNDLE_VERSION)]),
  name: z.string().min(1),
  dtype: z.enum(['float32', 'float16']),
  quant: z
    .object({
      dtype: z.enum(['int8', 'int4']),
      blockSize: z.number().int().refine((n) => (QUANT_BLOCK_SIZES as readonly number[]).includes(n), { message: `must be one of ${QUANT_BLOCK_SIZES.join(', ')}` }),
      accuracyLevel: z.number().int().min(0).max(4),
    })
    .optional(),
  config: modelConfig,
  tokenizer: z.object({
    kind: z.enum(['sentencepiece', 'huggingface']).optional(),
    file: bundleFile,
    sha256,
    bos: tokenId,
    eos: tokenId,
    pad: tokenId,
    unk: tokenId.optional(),
    vocabSize: z.number().int().positive().optional(),
  }),
  template: z.literal('vicuna_v1'),
  modalities: z.array(z.string()),
  modalityTokens: modalityTokens.optional(),
  preprocessing: preprocessing.optional(),
  units: z.array(unitSpec).min(1),
  source: z.object({ layout: z.string(), checkpoint: z.string(), adapter: z.string().optional(), warnings: z.array(z.string()) }),
}) satisfies z.ZodType<Manifest>;

export const MANIFEST_FILE = 'manifest.json';

/** The bundle's manifest, checked field by field; errors name the file and the offending field. */
export async function readManifest(bundleDir: string): Promise<Manifest> {
  const path = join(resolve(bundleDir), MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`${path}: cannot read the bundle manifest (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return parseManifest(text, path);
}

/** Validates manifest.json text read from `where` (a path or URL, named in every error). */
export function parseManifest(text: string, where: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${where} is not valid JSON (${(err as Error).message})`);
  }
  // Say plainly when the file is not a bundle manifest at all (or a newer one) before listing fields.
  const head = json as { format?: unknown; version?: unknown } | null;
  if (head && typeof head === 'object' && head.format !== BUNDLE_FORMAT) {
    throw new Error(`${where}: format is ${JSON.stringify(head.format)}, expected "${BUNDLE_FORMAT}"`);
  }
  if (head && typeof head.version === 'number' && head.version < OLDEST_BUNDLE_VERSION) {
    throw new Error(
      `${where}: bundle version ${head.version} was written by an older unimoe (its attention units take the past keys and values ` +
        `as copies, version ${OLDEST_BUNDLE_VERSION} and later read the KV cache in place); re-convert the checkpoint with \`unimoe convert\``,
    );
  }
  if (head && typeof head.version === 'number' && head.version > BUNDLE_VERSION) {
    throw new Error(`${where}: bundle version ${head.version} is newer than this unimoe reads (${OLDEST_BUNDLE_VERSION}-${BUNDLE_VERSION}); upgrade unimoe`);
  }
  const parsed = manifestSchema.safeParse(migrateWhisperAsAudio(json));
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new Error(`${where}: invalid bundle manifest: ${issues.slice(0, 10).join('; ')}${issues.length > 10 ? ` (+${issues.length - 10} more)` : ''}`);
  }
  const manifest = parsed.data as Manifest;
  const seen = new Set<string>();
  for (const u of manifest.units) {
    if (seen.has(u.name)) throw new Error(`${where}: unit ${u.name} is listed twice`);
    seen.add(u.name);
  }
  for (const [modality, pre] of Object.entries(manifest.preprocessing ?? {})) {
    if (pre && !seen.has(pre.unit)) throw new Error(`${where}: preprocessing.${modality}.unit names ${pre.unit}, which is not a unit of this bundle`);
  }
  return manifest;
}

/**
 * Bundles converted before the BEATs audio path called the Whisper unit `audio.encoder` (kind `audio`,
 * modality `audio`, `preprocessing.audio` with Whisper's `nFft`). They are read as what they are, the
 * speech path: kind `speech`, modality `speech`, `preprocessing.speech`, `modalityTokens.speech`. The
 * unit keeps its name and file, so old bundles still serve (and workers still agree on subjects).
 */
function migrateWhisperAsAudio(json: unknown): unknown {
  const m = json as { preprocessing?: Record<string, Record<string, unknown>>; modalityTokens?: Record<string, unknown>; modalities?: unknown; units?: unknown } | null;
  const audio = m?.preprocessing?.audio;
  if (!m || !audio || typeof audio !== 'object' || !('nFft' in audio) || m.preprocessing?.speech) return json;
  const { audio: whisper, ...restPre } = m.preprocessing!;
  const { audio: tokens, ...restTokens } = m.modalityTokens ?? {};
  const units = Array.isArray(m.units)
    ? m.units.map((u: { name?: unknown; kind?: unknown }) => (u && u.kind === 'audio' && u.name === whisper!.unit ? { ...u, kind: 'speech' } : u))
    : m.units;
  const modalities = Array.isArray(m.modalities) ? m.modalities.map((x) => (x === 'audio' ? 'speech' : x)) : m.modalities;
  return { ...m, modalities, units, preprocessing: { ...restPre, speech: whisper }, modalityTokens: { ...restTokens, ...(tokens !== undefined ? { speech: tokens } : {}) } };
}

/** Checks a unit file's size and sha256 against the manifest; throws naming the unit and file when they differ. */
export async function verifyUnit(bundleDir: string, unit: UnitSpec): Promise<void> {
  const path = join(resolve(bundleDir), unit.file);
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    throw new Error(`unit ${unit.name}: cannot read ${path} (${err.code ?? err.message})`);
  });
  if (info.size !== unit.bytes) throw new Error(`unit ${unit.name}: ${path} has ${info.size} bytes, the manifest says ${unit.bytes}`);
  const digest = await sha256File(path);
  if (digest !== unit.sha256) throw new Error(`unit ${unit.name}: ${path} has sha256 ${digest}, the manifest says ${unit.sha256} (corrupt or replaced file)`);
}
