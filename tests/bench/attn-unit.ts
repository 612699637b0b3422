/**
 * One attn unit of the benchmark shape at batch 1, one new token, per weight format and cache length:
 * ms per call against its weight-read limit, and (with --profile) onnxruntime's per-operator times,
 * so that the unit's per-node overhead is visible apart from its weight reads. The same session is
 * called in a loop, so float32's 17 MB of weights may stay in the last-level cache; in the engine they
 * come from memory (bench:engine's breakdown has that figure).
 *   pnpm bench:attn [--profile]
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as ort from 'onnxruntime-node';
import { buildAttnUnit, concatRows, type AttnWeights } from '@unimoe/shared/convert/units/attn';
import { linear, linearWeight, projection, startUnit, type ProjectionFormat } from '@unimoe/shared/convert/units/common';
import type { ModelConfig } from '@unimoe/shared/model/config';
import { unitSessionOptions } from '@unimoe/shared/runtime/ort-unit';
import { REALISTIC } from './realistic-model';
import { fmt, printTable } from './table';
import { rotaryTables } from '@unimoe/shared/model/rotary';

const CALLS = 300;
const WARMUP = 20;
const CONTEXTS = [64, 1024];
/** Read bandwidth for the limit column: the README's measured 1-row MatMul figure unless given. */
const BANDWIDTH_GBS = Number(process.env.BANDWIDTH_GBS) || 38.8;

const cfg: ModelConfig = {
  layout: 'unimoe-8e', ...REALISTIC, headDim: REALISTIC.hidden / REALISTIC.heads, rmsEps: 1e-5, ropeTheta: 10000, maxPositions: 2048,
  routing: { topK: 2, order: 'softmax-topk', renormalize: true }, bos: 1, eos: 2, pad: 0,
};

function random(n: number, scale: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * scale;
  });
}

function weights(): AttnWeights {
  const { hidden: H, heads: NH, kvHeads: KV, headDim: D, experts: E } = cfg;
  const s = 1 / Math.sqrt(H);
  return {
    inputNorm: random(H, 0.2, 1).map((x) => 1 + x), q: random(NH * D * H, s, 2), k: random(KV * D * H, s, 3), v: random(KV * D * H, s, 4),
    o: random(H * NH * D, s, 5), postNorm: random(H, 0.2, 6).map((x) => 1 + x), router: random(E * H, s, 7),
  };
}

const FORMATS: [string, ProjectionFormat, number][] = [
  ['float32', 'float32', 4],
  ['int8 (block 32)', { dtype: 'int8', blockSize: 32, accuracyLevel: 4 }, 1 + 4 / 32],
  ['int4 (block 32)', { dtype: 'int4', blockSize: 32, accuracyLevel: 4 }, 0.5 + 4 / 32],
];

function feeds(C: number): Record<string, ort.Tensor> {
  const { hidden: H, kvHeads: KV, headDim: D } = cfg;
  const rotary = rotaryTables(cfg);
  const mask = new Float32Array(C + 1); // every cache slot filled
  return {
    hidden: new ort.Tensor('float32', random(H, 2, 11), [1, 1, H]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from([BigInt(C)]), [1, 1]),
    key_cache: new ort.Tensor('float32', random(KV * C * D, 2, 12), [1, KV, C, D]),
    value_cache: new ort.Tensor('float32', random(KV * D * C, 2, 13), [1, KV, D, C]),
    attention_mask: new ort.Tensor('float32', mask, [1, 1, 1, C + 1]),
    rotary_cos: new ort.Tensor('float32', rotary.cos, rotary.dims),
    rotary_sin: new ort.Tensor('float32', rotary.sin, rotary.dims),
  };
}

/**
 * The unit's weight reads alone, as the same onnxruntime kernels: the q/k/v, o and router projections
 * of one token, no norms, rotary or attention. What the unit would cost with no per-node overhead.
 */
function projectionsOnly(w: AttnWeights, format: ProjectionFormat): Uint8Array {
  const { hidden: H, heads: NH, kvHeads: KV, headDim: D, experts: E } = cfg;
  const g = startUnit('projections', { inputs: [{ name: 'hidden', dtype: 'float32', shape: [1, 1, H] }], outputs: [] });
  projection(g, 'hidden', 'qkv', concatRows([w.q, w.k, w.v]), (NH + 2 * KV) * D, H, format, 'qkv_out');
  projection(g, 'hidden', 'o', w.o, H, NH * D, format, 'o_out');
  linear(g, 'hidden', linearWeight(g, 'router', w.router, E, H, 'float32'), 'router_out');
  g.output('qkv_out', 'float32', [1, 1, (NH + 2 * KV) * D]);
  g.output('o_out', 'float32', [1, 1, H]);
  g.output('router_out', 'float32', [1, 1, E]);
  return g.toBytes();
}

async function msPerCall(session: ort.InferenceSession, f: Record<string, ort.Tensor>): Promise<number> {
  for (let i = 0; i < WARMUP; i++) await session.run(f);
  const start = performance.now();
  for (let i = 0; i < CALLS; i++) await session.run(f);
  return (performance.now() - start) / CALLS;
}

/** onnxruntime's kernel time per operator type, µs per call, over CALLS calls at each cache length. */
async function kernelTimesByOperator(model: Uint8Array, label: string): Promise<Map<string, number>> {
  const prefix = `${tmpdir()}/attn-profile-${process.pid}-${label.split(' ')[0]}_`;
  const session = await ort.InferenceSession.create(model, { ...unitSessionOptions(), enableProfiling: true, profileFilePrefix: prefix });
  for (const C of CONTEXTS) await msPerCall(session, feeds(C));
  session.endProfiling();
  await session.release();
  const file = (await readdir(tmpdir())).find((f) => `${tmpdir()}/${f}`.startsWith(prefix));
  if (!file) throw new Error(`no onnxruntime profile ${prefix}*.json`);
  const events = JSON.parse(await readFile(`${tmpdir()}/${file}`, 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
  await rm(`${tmpdir()}/${file}`, { force: true });
  const calls = (CALLS + WARMUP) * CONTEXTS.length;
  const byOp = new Map<string, number>();
  for (const e of events) if (e.cat === 'Node' && e.name.endsWith('_kernel_time')) byOp.set(e.args?.op_name ?? '?', (byOp.get(e.args?.op_name ?? '?') ?? 0) + e.dur / calls);
  return byOp;
}

async function main() {
  const profile = process.argv.includes('--profile');
  const w = weights();
  const { hidden: H, heads: NH, kvHeads: KV, headDim: D, experts: E } = cfg;
  const projectionValues = H * (NH + 2 * KV) * D + NH * D * H;
  const rows: (string | number)[][] = [];
  const ops = new Map<string, Map<string, number>>();
  for (const [label, format, bytesPerValue] of FORMATS) {
    const model = buildAttnUnit(cfg, 0, w, format);
    const session = await ort.InferenceSession.create(model, unitSessionOptions());
    const alone = await ort.InferenceSession.create(projectionsOnly(w, format), unitSessionOptions());
    const projectionsMs = await msPerCall(alone, { hidden: feeds(0).hidden! });
    await alone.release();
    for (const C of CONTEXTS) {
      const ms = await msPerCall(session, feeds(C));
      const weightBytes = projectionValues * bytesPerValue + E * H * 4 + 2 * H * 4;
      const kvBytes = 2 * KV * C * D * 4;
      const limit = ((weightBytes + kvBytes) / (BANDWIDTH_GBS * 1e9)) * 1e3;
      rows.push([label, C, fmt(ms, 3), fmt(projectionsMs, 3), fmt(ms / projectionsMs, 2), fmt(limit, 3), fmt(ms / limit, 2)]);
    }
    // Profiled in a session of its own: the profiler's own cost stays out of the times above.
    if (profile) ops.set(label, await kernelTimesByOperator(model, label));
    await session.release();
  }
  printTable(`attn unit, batch 1, one new token (${CALLS} calls; limit: weights + KV at ${BANDWIDTH_GBS} GB/s)`, ['format', 'cache C', 'ms per call', 'projections alone ms', 'unit / projections', 'limit ms', 'unit / limit'], rows);
  if (profile) {
    const names = [...new Set([...ops.values()].flatMap((m) => [...m.keys()]))];
    const total = (label: string) => [...ops.get(label)!.values()].reduce((a, b) => a + b, 0);
    names.sort((a, b) => (ops.get('float32')!.get(b) ?? 0) - (ops.get('float32')!.get(a) ?? 0));
    printTable(`onnxruntime kernel µs per call, by operator (mean over both cache lengths)`, ['operator', ...ops.keys()], [
      ...names.map((n) => [n, ...[...ops.values()].map((m) => fmt(m.get(n) ?? 0, 1))]),
      ['all kernels', ...[...ops.keys()].map((l) => fmt(total(l), 1))],
    ]);
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
