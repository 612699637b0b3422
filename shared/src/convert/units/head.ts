/** `head`: hidden f32 [T,H] -> logits f32 [T,V], the final RMSNorm and lm_head. */
import type { ModelConfig } from '../../model/config';
import { finishUnit, projection, rmsNorm, startUnit, type ProjectionFormat, type UnitIO } from './common';

export interface HeadWeights {
  /** `model.norm.weight` [H]. */
  norm: Float32Array;
  /** `lm_head.weight` [V, H]. */
  lmHead: Float32Array;
}

export function headIO(cfg: ModelConfig): UnitIO {
  return {
    inputs: [{ name: 'hidden', dtype: 'float32', shape: ['T', cfg.hidden] }],
    outputs: [{ name: 'logits', dtype: 'float32', shape: ['T', cfg.vocab] }],
  };
}

export function buildHeadUnit(cfg: ModelConfig, w: HeadWeights, format: ProjectionFormat): Uint8Array {
  const io = headIO(cfg);
  const g = startUnit('head', io);
  const normed = rmsNorm(g, 'hidden', 'norm', w.norm, cfg.rmsEps);
  projection(g, normed, 'lm_head', w.lmHead, cfg.vocab, cfg.hidden, format, 'logits');
  return finishUnit(g, io);
}
