/**
 * Fidelity of a bundle dtype against the float64 reference (tests/reference): the checkpoint is converted
 * with that dtype, then along the reference's own greedy continuation of a prompt (64 tokens) the engine's
 * last-position logits are compared at every position (teacher forcing: one early flip does not hide the
 * rest), and the engine also generates 64 tokens freely.
 */
import type { Manifest, QuantDType, UnitWeightDType } from '@unimoe/shared/bundle/manifest';
import { convertCheckpoint, dtypeOptions } from '@unimoe/shared/convert/convert';
import { createEngine } from '@unimoe/edge/engine/engine';
import { argmax } from '../reference/math';
import { relativeError } from '../reference/compare';
import type { ReferenceModel } from '../reference/reference-model';

/** A bundle's projection dtype: float, or `convert --quant`. */
export type BundleDType = UnitWeightDType;
export const BUNDLE_DTYPES: readonly BundleDType[] = ['float32', 'float16', 'int8', 'int4'];
export const FIDELITY_STEPS = 64;
export const FIDELITY_PROMPT = [1, 450, 996, 173, 54];

export interface Fidelity {
  /** Over the 64 positions, of max|logits - reference| / max|reference|: the median and the max. */
  logitsRelError: { median: number; max: number };
  /** Positions (of 64) where the engine's argmax is the reference's greedy token. */
  argmaxAgreement: number;
  /** Tokens the engine generates freely before its first difference from the reference's greedy ones (of 64). */
  freeRunPrefix: number;
}

export function isQuantized(dtype: BundleDType): dtype is QuantDType {
  return dtype === 'int8' || dtype === 'int4';
}

export function convertAs(checkpointDir: string, bundleDir: string, dtype: BundleDType, quant: { blockSize?: number; accuracyLevel?: number } = {}): Promise<Manifest> {
  return convertCheckpoint({ checkpointDir, bundleDir, ...dtypeOptions(dtype, quant) });
}

/** The reference's greedy continuation of `prompt`, computed once per checkpoint and shared by every dtype. */
export function referenceContinuation(reference: ReferenceModel, prompt = FIDELITY_PROMPT, steps = FIDELITY_STEPS) {
  const tokens = reference.greedy(prompt, steps);
  const logits = reference.forwardAll([...prompt, ...tokens.slice(0, -1)]).slice(prompt.length - 1);
  return { prompt, tokens, logits };
}

export async function measureFidelity(bundleDir: string, expected: ReturnType<typeof referenceContinuation>): Promise<Fidelity> {
  const { prompt, tokens, logits } = expected;
  const engine = await createEngine({ bundleDir });
  try {
    const errors: number[] = [];
    let argmaxAgreement = 0;
    for (let i = 0; i < tokens.length; i++) {
      const got = await engine.logits([...prompt, ...tokens.slice(0, i)]);
      errors.push(relativeError(got, logits[i]!));
      if (argmax(got) === tokens[i]) argmaxAgreement++;
    }
    const run = await engine.generate({ promptIds: prompt, params: { maxTokens: tokens.length, temperature: 0, topP: 1, topK: 0, ignoreEos: true } });
    const firstDiff = tokens.findIndex((t, i) => run.ids[i] !== t);
    errors.sort((a, b) => a - b);
    const logitsRelError = { median: errors[errors.length >> 1]!, max: errors[errors.length - 1]! };
    return { logitsRelError, argmaxAgreement, freeRunPrefix: firstDiff < 0 ? tokens.length : firstDiff };
  } finally {
    await engine.close();
  }
}
