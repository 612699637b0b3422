/**
 * The independent float64 reference forward of a MoE decoder checkpoint (Uni-MoE 4e / 8e, Mixtral):
 * what the converter's ONNX units and the engine are checked against. No KV cache, no batching:
 * every call recomputes the whole sequence, plainly, from the math.
 */
import { openCheckpoint } from '@unimoe/shared/checkpoint/open';
import { readAdapter } from './adapter';
import type { ReferenceConfig } from './config';
import { readReferenceConfig } from './config';
import { applyRotary, argmax, causalAttention, matVec, rmsNorm, route, swiglu } from './math';
import type { ReferenceWeights } from './weights';
import { loadWeights } from './weights';

export type { ReferenceConfig } from './config';

/** One prompt position: a token id, or its input embedding given directly (a modality token, [hidden]). */
export type ReferenceInput = number | Float64Array;

export interface ReferenceModel {
  readonly config: ReferenceConfig;
  /** Logits of the last position. */
  forward(ids: number[]): Float64Array;
  /** Logits of every position. */
  forwardAll(ids: number[]): Float64Array[];
  /** `steps` argmax tokens, each from a full recompute of the sequence so far (no EOS stop). */
  greedy(ids: number[], steps: number): number[];
  /** As forward, with some positions given as input embeddings instead of ids. */
  forwardInputs(inputs: ReferenceInput[]): Float64Array;
  /** As greedy, with some prompt positions given as input embeddings. */
  greedyInputs(inputs: ReferenceInput[], steps: number): number[];
}

export async function loadReferenceModel(
  checkpointDir: string,
  opts: { adapterDir?: string } = {},
): Promise<ReferenceModel> {
  const config = await readReferenceConfig(checkpointDir);
  const patches = opts.adapterDir ? await readAdapter(opts.adapterDir) : undefined;
  const ckpt = await openCheckpoint(checkpointDir);
  try {
    return createReferenceModel(config, await loadWeights(ckpt, config, patches));
  } finally {
    await ckpt.close();
  }
}

/** A reference model over weights already in memory. */
export function createReferenceModel(config: ReferenceConfig, weights: ReferenceWeights): ReferenceModel {
  const checkIds = (ids: number[]) => {
    if (ids.length === 0) throw new Error('reference forward: ids must not be empty');
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= config.vocab) {
        throw new Error(`reference forward: token id ${id} is outside the vocabulary [0, ${config.vocab})`);
      }
    }
  };

  const embedInputs = (inputs: ReferenceInput[]): Float64Array[] => {
    if (inputs.length === 0) throw new Error('reference forward: inputs must not be empty');
    return inputs.map((input, pos) => {
      if (typeof input === 'number') {
        checkIds([input]);
        return weights.embed.data.slice(input * config.hidden, (input + 1) * config.hidden);
      }
      if (input.length !== config.hidden) throw new Error(`reference forward: input embedding at position ${pos} has ${input.length} values, expected ${config.hidden}`);
      return Float64Array.from(input);
    });
  };

  /** Final hidden states (after the last decoder layer, before the final norm), one per position. */
  const decode = (ids: number[]): Float64Array[] => decodeRows(ids.map((id) => weights.embed.data.slice(id * config.hidden, (id + 1) * config.hidden)));

  const decodeRows = (x: Float64Array[]): Float64Array[] => {
    const { hidden, heads, kvHeads, headDim, rmsEps, ropeTheta, routing } = config;
    for (const layer of weights.layers) {
      const q: Float64Array[] = [];
      const k: Float64Array[] = [];
      const v: Float64Array[] = [];
      x.forEach((xt, pos) => {
        const h = rmsNorm(xt, layer.inputNorm, rmsEps);
        const qt = matVec(layer.q, h);
        const kt = matVec(layer.k, h);
        applyRotary(qt, heads, headDim, pos, ropeTheta);
        applyRotary(kt, kvHeads, headDim, pos, ropeTheta);
        q.push(qt);
        k.push(kt);
        v.push(matVec(layer.v, h));
      });
      const att = causalAttention(q, k, v, heads, kvHeads, headDim);
      x.forEach((xt, pos) => {
        const o = matVec(layer.o, att[pos]);
        for (let i = 0; i < hidden; i++) xt[i] += o[i];
        const h = rmsNorm(xt, layer.postNorm, rmsEps);
        for (const { expert, weight } of route(matVec(layer.router, h), routing)) {
          const y = swiglu(layer.experts[expert], h);
          for (let i = 0; i < hidden; i++) xt[i] += weight * y[i];
        }
      });
    }
    return x;
  };

  const head = (xt: Float64Array) => matVec(weights.lmHead, rmsNorm(xt, weights.finalNorm, config.rmsEps));

  const forward = (ids: number[]): Float64Array => {
    checkIds(ids);
    const x = decode(ids);
    return head(x[x.length - 1]);
  };

  const forwardInputs = (inputs: ReferenceInput[]): Float64Array => {
    const x = decodeRows(embedInputs(inputs));
    return head(x[x.length - 1]);
  };

  return {
    config,
    forward,
    forwardInputs,
    greedyInputs(inputs, steps) {
      if (!Number.isInteger(steps) || steps < 0) throw new Error(`reference greedy: steps must be a non-negative integer, got ${steps}`);
      const seq = [...inputs];
      const out: number[] = [];
      for (let s = 0; s < steps; s++) {
        const next = argmax(forwardInputs(seq));
        out.push(next);
        seq.push(next);
      }
      return out;
    },
    forwardAll(ids) {
      checkIds(ids);
      return decode(ids).map(head);
    },
    greedy(ids, steps) {
      if (!Number.isInteger(steps) || steps < 0) throw new Error(`reference greedy: steps must be a non-negative integer, got ${steps}`);
      const seq = [...ids];
      const out: number[] = [];
      for (let s = 0; s < steps; s++) {
        const next = argmax(forward(seq));
        out.push(next);
        seq.push(next);
      }
      return out;
    },
  };
}
