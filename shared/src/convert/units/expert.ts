/** `layer{L}.expert{E}`: x f32 [T,H] -> y f32 [T,H], the SwiGLU FFN down(silu(gate x) * up x). */
import type { ModelConfig } from '../../model/config';
import { finishUnit, projection, startUnit, type ProjectionFormat, type UnitIO } from './common';

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

export function buildExpertUnit(cfg: ModelConfig, name: string, w: ExpertWeights, format: ProjectionFormat): Uint8Array {
  const io = expertIO(cfg);
  const g = startUnit(name, io);
  const { hidden: H, intermediate: I } = cfg;
  const gate = projection(g, 'x', 'gate_proj', w.gate, I, H, format);
  const silu = g.node('Mul', [gate, g.node('Sigmoid', [gate])]);
  const up = projection(g, 'x', 'up_proj', w.up, I, H, format);
  projection(g, g.node('Mul', [silu, up]), 'down_proj', w.down, H, I, format, 'y');
  return finishUnit(g, io);
}
