/** The normalised architecture of a MoE decoder, whatever checkpoint layout it came from. */

export type Layout = 'unimoe-4e' | 'unimoe-8e' | 'mixtral';

/**
 * How router logits become expert weights.
 * - 'topk-softmax': take the top-k logits, softmax over those k (Uni-MoE 4e, Mixtral).
 * - 'softmax-topk': softmax over all experts, take the top-k probabilities, then renormalise them
 *   to sum to 1 when `renormalize` is set (Uni-MoE 8e).
 */
export interface RoutingPolicy {
  topK: number;
  order: 'topk-softmax' | 'softmax-topk';
  renormalize: boolean;
}

export interface ModelConfig {
  layout: Layout;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  rmsEps: number;
  ropeTheta: number;
  maxPositions: number;
  experts: number;
  routing: RoutingPolicy;
  bos: number;
  eos: number;
  pad: number;
}
