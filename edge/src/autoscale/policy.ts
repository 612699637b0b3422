/**
 * What the autoscaler is asked to do: the pools (which experts on which layers, min/max replicas) and
 * the scaling policy, named with the HPA / KEDA / Ray Serve vocabulary. Parsed from flags
 * (`--pool a=0-1@0-3 --min 0 --max 4`) or a JSON config file; every mistake names the flag or file.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { unitName } from '@unimoe/shared/bundle/manifest';
import { parseIndexList } from '@unimoe/shared/index-list';
import { parseEncoderList, type EncoderName } from '@unimoe/gpu-worker/units';

export interface PoolSpec {
  name: string;
  /** Empty for a pool of modality encoders only. */
  experts: number[];
  /** Undefined: every layer. */
  layers?: number[];
  /** Modality encoders it hosts (`unimoe worker --encoders`). */
  encoders?: EncoderName[];
  minReplicas: number;
  maxReplicas: number;
}

export interface HotPolicy {
  /** Most extra worker processes for hot experts (0 turns hot-expert replication off). */
  maxReplicas: number;
  /** Memory budget of one hot replica, in units (one unit = one expert on one layer). */
  unitsPerReplica: number;
  /** Replicate only while some layer's balancedness (mean / max load per replica) is below this. */
  targetBalancedness: number;
  /** Below this many routed tokens per second in total, routing is too thin to call any expert hot. */
  minTokensPerSecond: number;
}

export interface ScalingPolicy {
  /** HPA-style target: the busy fraction (onnxruntime time / wall time) each replica should run at. */
  targetBusyFraction: number;
  /** A second target like a KEDA trigger: expert-token rows per second per replica (0: unused). */
  targetTokensPerSecond: number;
  /** Outstanding requests per replica that call for another replica (0: unused). */
  targetQueueDepth: number;
  /** HPA `behavior.scaleUp.stabilizationWindowSeconds` (default 0: scale up at once). */
  scaleUpStabilizationMs: number;
  /** HPA `behavior.scaleDown.stabilizationWindowSeconds`: scale down to the highest recommendation of this window. */
  scaleDownStabilizationMs: number;
  /** Ray Serve `upscale_delay`-like pause after a scale-up before the next one (new replicas must start and absorb load). */
  scaleUpCooldownMs: number;
  /** KEDA `cooldownPeriod`: a pool with min 0 goes to zero after this long without load. */
  idleToZeroMs: number;
  /** HPA `scaleUp` policy: at most this many replicas added per decision. */
  maxScaleUpStep: number;
  hot: HotPolicy;
}

export const DEFAULT_POLICY: ScalingPolicy = {
  targetBusyFraction: 0.6,
  targetTokensPerSecond: 0,
  targetQueueDepth: 8,
  scaleUpStabilizationMs: 0,
  scaleDownStabilizationMs: 30_000,
  scaleUpCooldownMs: 5_000,
  idleToZeroMs: 60_000,
  maxScaleUpStep: 4,
  hot: { maxReplicas: 0, unitsPerReplica: 4, targetBalancedness: 0.8, minTokensPerSecond: 1 },
};

/** `NAME=EXPERTS[@LAYERS]`, e.g. `a=0-1` or `b=2,3@0-7`. */
export function parsePoolFlag(text: string, limits: { minReplicas: number; maxReplicas: number }): PoolSpec {
  const m = /^([A-Za-z0-9_-]+)=([^@]+)(?:@(.+))?$/.exec(text);
  if (!m) throw new Error(`--pool ${JSON.stringify(text)}: expected NAME=EXPERTS[@LAYERS], e.g. a=0-1 or b=2,3@0-7`);
  return checkPool({
    name: m[1]!,
    experts: parseIndexList(m[2]!, `--pool ${m[1]} experts`),
    ...(m[3] ? { layers: parseIndexList(m[3], `--pool ${m[1]} layers`) } : {}),
    ...limits,
  });
}

/** `NAME=vision,audio`: a pool of modality encoders. */
export function parseEncoderPoolFlag(text: string, limits: { minReplicas: number; maxReplicas: number }): PoolSpec {
  const m = /^([A-Za-z0-9_-]+)=(.+)$/.exec(text);
  if (!m) throw new Error(`--encoder-pool ${JSON.stringify(text)}: expected NAME=ENCODERS, e.g. enc=vision,audio`);
  return checkPool({ name: m[1]!, experts: [], encoders: parseEncoderList(m[2]!, `--encoder-pool ${m[1]}`), ...limits });
}

function checkPool(p: PoolSpec): PoolSpec {
  if (p.name.startsWith('hot-')) throw new Error(`pool ${p.name}: names starting with "hot-" are the autoscaler's own hot-expert replicas`);
  if (p.minReplicas < 0 || p.maxReplicas < 1 || p.minReplicas > p.maxReplicas) {
    throw new Error(`pool ${p.name}: min ${p.minReplicas} and max ${p.maxReplicas} replicas must satisfy 0 <= min <= max, max >= 1`);
  }
  return p;
}

const indexList = z.union([z.string(), z.array(z.number().int().min(0))]);
const configSchema = z
  .object({
    pools: z
      .array(
        z
          .object({ name: z.string(), experts: indexList.optional(), layers: indexList.optional(), encoders: z.string().optional(), min: z.number().int().min(0).optional(), max: z.number().int().min(1).optional() })
          .strict(),
      )
      .min(1),
    policy: z
      .object({
        targetBusyFraction: z.number().gt(0).max(1),
        targetTokensPerSecond: z.number().min(0),
        targetQueueDepth: z.number().min(0),
        scaleUpStabilizationMs: z.number().min(0),
        scaleDownStabilizationMs: z.number().min(0),
        scaleUpCooldownMs: z.number().min(0),
        idleToZeroMs: z.number().min(0),
        maxScaleUpStep: z.number().int().min(1),
        hot: z
          .object({ maxReplicas: z.number().int().min(0), unitsPerReplica: z.number().int().min(1), targetBalancedness: z.number().gt(0).max(1), minTokensPerSecond: z.number().min(0) })
          .partial()
          .strict(),
      })
      .partial()
      .strict()
      .optional(),
  })
  .strict();

/** A JSON config file: `{ "pools": [{ "name": "a", "experts": "0-1", "layers": "0-3", "min": 0, "max": 4 }], "policy": {...} }`. */
export async function readConfigFile(path: string, defaults: { minReplicas: number; maxReplicas: number }): Promise<{ pools: PoolSpec[]; policy: Partial<ScalingPolicy> }> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new Error(`config file ${path}: ${(err as Error).message}`);
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`config file ${path}: ${issue.path.join('.') || '(top level)'}: ${issue.message}`);
  }
  const list = (v: string | number[], what: string) => (typeof v === 'string' ? parseIndexList(v, `config file ${path}: ${what}`) : [...new Set(v)].sort((a, b) => a - b));
  const pools = parsed.data.pools.map((p) =>
    checkPool({
      name: p.name,
      experts: p.experts === undefined ? [] : list(p.experts, `pool ${p.name} experts`),
      ...(p.layers !== undefined ? { layers: list(p.layers, `pool ${p.name} layers`) } : {}),
      ...(p.encoders !== undefined ? { encoders: parseEncoderList(p.encoders, `config file ${path}: pool ${p.name} encoders`) } : {}),
      minReplicas: p.min ?? defaults.minReplicas,
      maxReplicas: p.max ?? defaults.maxReplicas,
    }),
  );
  const { hot, ...rest } = parsed.data.policy ?? {};
  return { pools, policy: { ...rest, ...(hot ? { hot: { ...DEFAULT_POLICY.hot, ...hot } } : {}) } };
}

/** Pool names must be unique and must not host the same unit twice (a unit's replicas are counted per pool). */
export function checkPools(pools: PoolSpec[], model: { layers: number; experts: number; units?: string[] }): void {
  const seen = new Map<string, string>();
  const names = new Set<string>();
  for (const p of pools) {
    if (!/^[A-Za-z0-9_-]+$/.test(p.name)) throw new Error(`pool name ${JSON.stringify(p.name)}: use letters, digits, - and _ only`);
    if (names.has(p.name)) throw new Error(`pool ${p.name} is given twice`);
    if (p.experts.length === 0 && !p.encoders?.length) throw new Error(`pool ${p.name} hosts nothing: give experts or encoders`);
    names.add(p.name);
    for (const e of p.experts) if (e >= model.experts) throw new Error(`pool ${p.name}: expert ${e} does not exist (the model has ${model.experts})`);
    for (const l of p.layers ?? []) if (l >= model.layers) throw new Error(`pool ${p.name}: layer ${l} does not exist (the model has ${model.layers})`);
    for (const unit of poolUnits(p, model.layers)) {
      if (model.units && !model.units.includes(unit)) throw new Error(`pool ${p.name}: the bundle has no unit ${unit}`);
      const other = seen.get(unit);
      if (other) throw new Error(`pools ${other} and ${p.name} both host ${unit}`);
      seen.set(unit, p.name);
    }
  }
}

/** The units a pool hosts: `layer{L}.expert{E}` and its encoders' units. */
export function poolUnits(p: Pick<PoolSpec, 'experts' | 'layers' | 'encoders'>, layers: number): string[] {
  const ls = p.layers ?? Array.from({ length: layers }, (_, i) => i);
  return [...ls.flatMap((l) => p.experts.map((e) => unitName.expert(l, e))), ...(p.encoders ?? []).map((e) => unitName[e])];
}
