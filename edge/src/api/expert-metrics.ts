/** Times and counts every (layer, expert) batch of an ExpertBackend (per modality) into the metrics, whichever backend it is. */
import type { ExpertBackend } from '../engine/expert-backend';
import { observeExpertDispatch } from './metrics';
import type { RoutedTokens } from './routed-tokens';

/**
 * Hands the batches to the backend one call each: both backends already run every batch on its own
 * (Promise.all over the batches), so this keeps their concurrency and makes each batch's latency visible.
 */
export function instrumentExperts(backend: ExpertBackend, routed?: RoutedTokens): ExpertBackend {
  return {
    runExperts: (batches) =>
      Promise.all(
        batches.map(async (batch) => {
          const started = performance.now();
          const [y] = await backend.runExperts([batch]);
          const modalities = batch.modalities ?? { text: batch.tokens };
          observeExpertDispatch(batch.layer, batch.expert, batch.tokens, performance.now() - started, modalities);
          routed?.add(batch.layer, batch.expert, modalities);
          return y!;
        }),
      ),
    close: () => backend.close(),
  };
}
