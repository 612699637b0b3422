/** Times and counts every (layer, expert) batch of an ExpertBackend (per modality) into the metrics, whichever backend it is. */
import type { ExpertBackend } from '../engine/expert-backend';
import { observeExpertDispatch } from './metrics';
import type { RoutedTokens } from './routed-tokens';

/**
 * Hands a layer's batches to the backend in one call (both backends run a layer's experts together: one
 * onnxruntime run in-process, one message per pool in split mode), so each batch's latency is its layer's.
 */
export function instrumentExperts(backend: ExpertBackend, routed?: RoutedTokens): ExpertBackend {
  return {
    runExperts: async (batches) => {
      const started = performance.now();
      const ys = await backend.runExperts(batches);
      const ms = performance.now() - started;
      for (const batch of batches) {
        const modalities = batch.modalities ?? { text: batch.tokens };
        observeExpertDispatch(batch.layer, batch.expert, batch.tokens, ms, modalities);
        routed?.add(batch.layer, batch.expert, modalities);
      }
      return ys;
    },
    close: () => backend.close(),
  };
}
