/**
 * Rotary position embedding tables (HF Llama `rotate_half`). Bundle version 3 attn units take them as the
 * inputs `rotary_cos` and `rotary_sin`, so one copy per process serves every layer (in version 2 each attn
 * unit stored its own: maxPositions * D * 4 bytes per layer, 16 MiB per layer for a 32k-position Mixtral).
 */
import type { Tensor } from '../tensor';
import type { ModelConfig } from './config';

/** The attn unit inputs (bundle version 3) that carry the tables. */
export const ROTARY_INPUTS = ['rotary_cos', 'rotary_sin'] as const;

/** HF's inverse frequencies theta^(-2i/D), i < D/2. */
function rotaryInvFreq(theta: number, headDim: number): number[] {
  return Array.from({ length: headDim / 2 }, (_, i) => theta ** (-(2 * i) / headDim));
}

export interface RotaryTables {
  /** [maxPositions, D/2] cos and sin of position * inv_freq, computed in float64, stored float32. */
  cos: Float32Array;
  sin: Float32Array;
  dims: [number, number];
}

export function rotaryTables(cfg: Pick<ModelConfig, 'ropeTheta' | 'headDim' | 'maxPositions'>): RotaryTables {
  const invFreq = rotaryInvFreq(cfg.ropeTheta, cfg.headDim);
  const half = invFreq.length;
  const cos = new Float32Array(cfg.maxPositions * half);
  const sin = new Float32Array(cfg.maxPositions * half);
  for (let p = 0; p < cfg.maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      cos[p * half + i] = Math.cos(p * invFreq[i]!);
      sin[p * half + i] = Math.sin(p * invFreq[i]!);
    }
  }
  return { cos, sin, dims: [cfg.maxPositions, half] };
}

/** The tables as an attn unit's feeds: built once, the same buffers serve every layer and every call. */
export function rotaryFeeds(cfg: Pick<ModelConfig, 'ropeTheta' | 'headDim' | 'maxPositions'>): Record<(typeof ROTARY_INPUTS)[number], Tensor> {
  const { cos, sin, dims } = rotaryTables(cfg);
  return { rotary_cos: { data: cos, dims }, rotary_sin: { data: sin, dims } };
}
