/**
 * `pnpm bench:dispatch`: what one batch-1 expert call costs beyond reading the experts' weights. The
 * experts here have the benchmark model's hidden size (1024) but an intermediate size of 8, so their
 * weights cost next to nothing and what is left is dispatch: onnxruntime-node's run (its setImmediate
 * turn, input and output copies), the merged graph's nodes, our wrapper (ExpertGroup.run). Rows:
 *   - a layer's 8 experts merged, the way a decode step calls them: 2 experts with 1 row, 6 with none;
 *   - the same call straight to onnxruntime (no ExpertGroup wrapper);
 *   - a graph of only the 2 active experts (what skipping the empty ones would save);
 *   - one expert alone, with 1 row and with 0 rows; a bare setImmediate turn.
 * Medians of many alternating calls (robust on a shared machine).
 */
import { availableParallelism, cpus, loadavg } from 'node:os';
import { buildExpertUnit } from '@unimoe/shared/convert/units/expert';
import type { ModelConfig } from '@unimoe/shared/model/config';
import { mergeModels } from '@unimoe/shared/onnx/merge';
import { ExpertGroup } from '@unimoe/shared/runtime/expert-group';
import { loadUnitSession } from '@unimoe/shared/runtime/ort-unit';
import { REALISTIC } from './realistic-model';
import { fmt, percentile, printTable } from './table';

const H = REALISTIC.hidden;
const EXPERTS = REALISTIC.experts;
const CALLS = 3000;

function tinyExperts(): Uint8Array[] {
  const cfg = { hidden: H, intermediate: 8 } as ModelConfig;
  return Array.from({ length: EXPERTS }, (_, e) =>
    buildExpertUnit(cfg, `expert${e}`, { gate: new Float32Array(8 * H).fill(0.01), up: new Float32Array(8 * H).fill(0.02), down: new Float32Array(H * 8).fill(0.03) }, 'float32'),
  );
}

const merged = (models: Uint8Array[]) => mergeModels('experts', models.map((model, e) => ({ model, prefix: `e${e}`, inputs: { x: `x${e}` }, outputs: { y: `y${e}` } })));

async function main() {
  console.log(`# bench:dispatch - ${cpus()[0]?.model ?? 'cpu'} x ${availableParallelism()}, load average ${fmt(loadavg()[0]!, 2)}`);
  const models = tinyExperts();
  const group = await ExpertGroup.load('experts', models.map((model, e) => ({ expert: e, name: `expert${e}`, model, input: 'x', output: 'y' })), H);
  const all = await loadUnitSession(merged(models));
  const two = await loadUnitSession(merged(models.slice(0, 2)));
  const one = await loadUnitSession(models[0]!);
  const row = { data: new Float32Array(H).fill(0.5), dims: [1, H] };
  const none = { data: new Float32Array(0), dims: [0, H] };
  const active = [0, 3];
  const cases: [string, () => Promise<unknown>][] = [
    [`ExpertGroup.run: ${EXPERTS} merged, 2 with 1 row`, () => group.run(active.map((expert) => ({ expert, x: row.data, rows: 1 })))],
    [`onnxruntime run: ${EXPERTS} merged, 2 with 1 row`, () => all.run(Object.fromEntries(models.map((_, e) => [`x${e}`, active.includes(e) ? row : none])))],
    ['onnxruntime run: 2 merged, both with 1 row', () => two.run({ x0: row, x1: row })],
    ['onnxruntime run: 1 expert, 1 row', () => one.run({ x: row })],
    ['onnxruntime run: 1 expert, 0 rows', () => one.run({ x: none })],
    ['setImmediate turn', () => new Promise((resolve) => setImmediate(resolve))],
  ];
  const times = cases.map((): number[] => []);
  for (let call = 0; call < CALLS; call++) {
    for (const [i, [, fn]] of cases.entries()) {
      const t0 = performance.now();
      await fn();
      if (call >= CALLS / 10) times[i]!.push((performance.now() - t0) * 1000);
    }
  }
  for (const s of [all, two, one]) await s.release();
  await group.release();
  const base = percentile(times[0]!, 50);
  printTable(
    `One batch-1 expert-layer call without weight reads (hidden ${H}, intermediate 8; median of ${(CALLS * 9) / 10} calls)`,
    ['call', 'us (median)', 'us (p90)', 'vs the decode call'],
    cases.map(([label], i) => [label, fmt(percentile(times[i]!, 50)), fmt(percentile(times[i]!, 90)), fmt(percentile(times[i]!, 50) / base, 2)]),
  );
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
