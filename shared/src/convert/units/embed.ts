/** `embed`: input_ids int64 [T] -> hidden f32 [T,H], a row lookup in the token embedding table. */
import type { WeightDType } from '../../bundle/manifest';
import type { ModelConfig } from '../../model/config';
import { finishUnit, startUnit, type UnitIO } from './common';

export function embedIO(cfg: ModelConfig): UnitIO {
  return {
    inputs: [{ name: 'input_ids', dtype: 'int64', shape: ['T'] }],
    outputs: [{ name: 'hidden', dtype: 'float32', shape: ['T', cfg.hidden] }],
  };
}

/** `table` is `embed_tokens.weight` [V, H]. float16 bundles gather float16 rows and cast only those. */
export function buildEmbedUnit(cfg: ModelConfig, table: Float32Array, dtype: WeightDType): Uint8Array {
  const io = embedIO(cfg);
  const g = startUnit('embed', io);
  const stored = g.floatInitializer('embed_tokens', table, [cfg.vocab, cfg.hidden], dtype);
  if (dtype === 'float32') {
    g.node('Gather', [stored, 'input_ids'], { outputs: ['hidden'], attrs: { axis: 0 } });
  } else {
    const rows = g.node('Gather', [stored, 'input_ids'], { attrs: { axis: 0 } });
    g.node('Cast', [rows], { outputs: ['hidden'], attrs: { to: 1 /* FLOAT */ } });
  }
  return finishUnit(g, io);
}
