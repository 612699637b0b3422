/** Times every (layer, expert) batch of an ExpertBackend into the dispatch metrics, whichever backend it is. */
import type { ExpertBackend } from '../engine/expert-backend';
import { observeExpertDispatch } from './metrics';

/**
 * Hands the batches to the backend one call each: both backends already run every batch on its own
 * (Promise.all over the batches), so this keeps their concurrency and makes each batch's latency visible.
 */
export function instrumentExperts(backend: ExpertBackend): ExpertBackend {
  return {
    runExperts: (batches) =>
      Promise.all(
        batches.map(async (batch) => {
          const started = performance.now();
          const [y] = await backend.runExperts([batch]);
          observeExpertDispatch(batch.layer, batch.expert, batch.tokens, performance.now() - started);
          return y!;
        }),
      ),
    close: () => backend.close(),
  };
}
