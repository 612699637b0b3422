/** `layer{L}.expert{E}`: x f32 [T,H] -> y f32 [T,H], the SwiGLU FFN down(silu(gate x) * up x). */
import type { WeightDType } from '../../bundle/manifest';
import type { ModelConfig } from '../../model/config';
import { finishUnit, linear, linearWeight, startUnit, type UnitIO } from './common';

export interface ExpertWeights {
  /** HF Linear weights: gate and up [I, H], down [H, I]. */
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
}

export function expertIO(cfg: ModelConfig): UnitIO {
  return {
    inputs: [{ name: 'x', dtype: 'float32', shape: ['T', cfg.hidden] }],
    outputs: [{ name: 'y', dtype: 'float32', shape: ['T', cfg.hidden] }],
  };
}

export function buildExpertUnit(cfg: ModelConfig, name: string, w: ExpertWeights, dtype: WeightDType): Uint8Array {
  const io = expertIO(cfg);
  const g = startUnit(name, io);
  const { hidden: H, intermediate: I } = cfg;
  const gate = linear(g, 'x', linearWeight(g, 'gate_proj', w.gate, I, H, dtype));
  const silu = g.node('Mul', [gate, g.node('Sigmoid', [gate])]);
  const up = linear(g, 'x', linearWeight(g, 'up_proj', w.up, I, H, dtype));
  linear(g, g.node('Mul', [silu, up]), linearWeight(g, 'down_proj', w.down, H, I, dtype), 'y');
  return finishUnit(g, io);
}
