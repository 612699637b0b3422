/**
 * One dtype row of bench:engine, in its own process so that its resident memory is its own:
 * `node --import tsx tests/bench/dtype-step.ts <bundle-dir>` loads the engine, prefills a 128-token
 * prompt (experts load on first use; 128 tokens route to every one), decodes one sequence and prints
 * {"residentMiB" (after the warm-up), "msPerStep"} as JSON on its last line.
 */
import { createEngine } from '@unimoe/edge/engine/engine';

const DECODE_TOKENS = 32;

async function main() {
  const bundleDir = process.argv[2];
  if (!bundleDir) throw new Error('usage: dtype-step.ts <bundle-dir>');
  const engine = await createEngine({ bundleDir });
  try {
    const greedy = { temperature: 0, topP: 1, topK: 0, ignoreEos: true };
    const prompt = (len: number) => [1, ...Array.from({ length: len - 1 }, (_, i) => 3 + ((i * 104729) % 31000))];
    await engine.generate({ promptIds: prompt(128), params: { ...greedy, maxTokens: 4 } });
    const residentMiB = process.memoryUsage().rss / 2 ** 20;
    const promptIds = prompt(16);
    // Decode: from the first token to the last, so prefill is not counted. Best of 3 runs (shared machine).
    let best = Infinity;
    for (let run = 0; run < 3; run++) {
      const times: number[] = [];
      await engine.generate({ promptIds, params: { ...greedy, maxTokens: DECODE_TOKENS }, onToken: () => void times.push(performance.now()) });
      best = Math.min(best, (times.at(-1)! - times[0]!) / (times.length - 1));
    }
    console.log(JSON.stringify({ residentMiB, msPerStep: best }));
  } finally {
    await engine.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
