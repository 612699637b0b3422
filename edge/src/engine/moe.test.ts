import { describe, expect, it } from 'vitest';
import type { RoutingPolicy } from '@unimoe/shared/model/config';
import type { ExpertBackend, ExpertBatch } from './expert-backend';
import { runMoe } from './moe';
import { Scratch } from './scratch';

/** A closed-form expert for checking the grouping and combine: y = tanh(x * (e + 1) + layer). */
class FormulaExperts implements ExpertBackend {
  calls: ExpertBatch[][] = [];
  async runExperts(batches: ExpertBatch[]): Promise<Float32Array[]> {
    this.calls.push(batches.map((b) => ({ ...b, x: b.x.slice() })));
    return batches.map((b) => b.x.map((v) => Math.tanh(v * (b.expert + 1) + b.layer)));
  }
  async close() {}
}

function pseudoRandom(n: number, seed: number): Float32Array {
  let s = seed;
  return new Float32Array(n).map(() => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1);
}

describe('runMoe', () => {
  for (const policy of [
    { topK: 2, order: 'topk-softmax', renormalize: false },
    { topK: 2, order: 'softmax-topk', renormalize: true },
    { topK: 3, order: 'softmax-topk', renormalize: false },
  ] as RoutingPolicy[]) {
    it(`groups tokens by expert once per layer and combines like a float64 loop (${policy.order}, k=${policy.topK})`, async () => {
      const rows = 9, H = 5, E = 6, layer = 3;
      const hiddenOut = pseudoRandom(rows * H, 1);
      const moeInput = pseudoRandom(rows * H, 2);
      const routerLogits = pseudoRandom(rows * E, 3).map((v) => v * 3);
      const backend = new FormulaExperts();
      const out = new Float32Array(rows * H);
      await runMoe({ layer, rows, hidden: H, experts: E, policy, hiddenOut, moeInput, routerLogits }, backend, new Scratch(), out);

      expect(backend.calls).toHaveLength(1);
      const batches = backend.calls[0];
      expect(new Set(batches.map((b) => b.expert)).size).toBe(batches.length);
      expect(batches.reduce((a, b) => a + b.tokens, 0)).toBe(rows * policy.topK);

      for (let r = 0; r < rows; r++) {
        // float64 reference straight from the math
        const logits = [...routerLogits.subarray(r * E, (r + 1) * E)];
        const ranked = logits.map((v, e) => ({ v, e })).sort((a, b) => b.v - a.v || a.e - b.e).slice(0, policy.topK);
        let w: number[];
        if (policy.order === 'topk-softmax') {
          const z = ranked.map((x) => Math.exp(x.v));
          w = z.map((x) => x / z.reduce((a, b) => a + b, 0));
        } else {
          const all = logits.reduce((a, v) => a + Math.exp(v), 0);
          w = ranked.map((x) => Math.exp(x.v) / all);
          if (policy.renormalize) w = w.map((x, _, arr) => x / arr.reduce((a, b) => a + b, 0));
        }
        for (let h = 0; h < H; h++) {
          let expected = hiddenOut[r * H + h];
          ranked.forEach((x, j) => (expected += w[j] * Math.tanh(moeInput[r * H + h] * (x.e + 1) + layer)));
          expect(Math.abs(out[r * H + h] - expected)).toBeLessThan(1e-6);
        }
        // the expert saw exactly this row's input
        for (const x of ranked) {
          const batch = batches.find((b) => b.expert === x.e)!;
          const found = Array.from({ length: batch.tokens }, (_, i) => batch.x.subarray(i * H, (i + 1) * H)).some((row) =>
            row.every((v, h) => v === moeInput[r * H + h]),
          );
          expect(found).toBe(true);
        }
      }
    });
  }

  it('names the expert when the backend returns a wrong-sized result', async () => {
    const bad: ExpertBackend = { runExperts: async (b) => b.map(() => new Float32Array(1)), close: async () => {} };
    const policy: RoutingPolicy = { topK: 1, order: 'topk-softmax', renormalize: false };
    await expect(
      runMoe(
        { layer: 1, rows: 1, hidden: 4, experts: 2, policy, hiddenOut: new Float32Array(4), moeInput: new Float32Array(4), routerLogits: Float32Array.of(0, 1) },
        bad,
        new Scratch(),
        new Float32Array(4),
      ),
    ).rejects.toThrow(/layer1\.expert1 has 1 values, expected 1x4/);
  });
});
