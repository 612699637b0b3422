/**
 * The converter on the PyTorch-made fixtures in tests/fixtures/models (all three layouts, a PEFT
 * adapter): layout detection, the bundle it writes, per-unit numerics against float64 math over the
 * raw checkpoint tensors (LoRA merged here, in float64), and failures that must leave nothing behind.
 */
import { cp, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { readManifest, verifyUnit } from '../bundle/load';
import type { Manifest } from '../bundle/manifest';
import { openCheckpoint, openCheckpointFile } from '../checkpoint/open';
import type { Checkpoint } from '../checkpoint/types';
import { writeSafetensors } from '../checkpoint/write';
import { convertCheckpoint } from './convert';
import { detectModel } from './detect';
import type { AttnWeights } from './units/attn';
import { attnReference, expert64, linear64, random, relErr, rmsNorm64, type AttnCase } from './testing/reference64';
import { cacheFeeds, f32, i64, runUnit } from './testing/run-unit';
import { rotaryFeeds } from '../model/rotary';

const FIXTURES = fileURLToPath(new URL('../../../tests/fixtures/models/', import.meta.url));
const TOKENIZER = fileURLToPath(new URL('../../assets/tokenizer/tiny-llama-bpe.model', import.meta.url));

const scratch: string[] = [];
afterEach(async () => {
  await Promise.all(scratch.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** A fresh parent directory holding `ckpt/`: a copy of the fixture, with the tiny tokenizer unless told otherwise. */
async function stage(fixture: string, opts: { tokenizer?: boolean } = {}): Promise<{ parent: string; ckpt: string; bundle: string }> {
  const parent = await mkdtemp(join(tmpdir(), 'unimoe-convert-'));
  scratch.push(parent);
  const ckpt = join(parent, 'ckpt');
  await cp(join(FIXTURES, fixture), ckpt, { recursive: true });
  await rm(join(ckpt, 'tokenizer.model'), { force: true });
  if (opts.tokenizer !== false) await cp(TOKENIZER, join(ckpt, 'tokenizer.model'));
  return { parent, ckpt, bundle: join(parent, 'bundle') };
}

async function readJsonFile(path: string): Promise<unknown> {
  return JSON.parse(await readFile(path, 'utf8'));
}

async function withCheckpoint<T>(open: Promise<Checkpoint>, fn: (c: Checkpoint) => Promise<T>): Promise<T> {
  const c = await open;
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

/** W + scale * B @ A in float64, from the raw factor tensors. */
function merged64(w: Float32Array, a: Float32Array, b: Float32Array, out: number, inp: number, r: number, scale: number): Float64Array {
  const m = Float64Array.from(w);
  for (let o = 0; o < out; o++)
    for (let i = 0; i < inp; i++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += b[o * r + k] * a[k * inp + i];
      m[o * inp + i] += scale * s;
    }
  return m;
}

function attnCase(m: Manifest): AttnCase {
  const { hidden, kvHeads, headDim } = m.config;
  const B = 1, S = 2, P = 3, L = P + S; // prettier-ignore
  const mask = new Float32Array(S * L).map((_, i) => (i % L > P + Math.floor(i / L) ? -1e30 : 0));
  return {
    B, S, P, mask, // prettier-ignore
    hidden: random(B * S * hidden, 7, 1),
    positions: [[3, 4]],
    pastKey: random(B * P * kvHeads * headDim, 8),
    pastValue: random(B * P * kvHeads * headDim, 9),
  };
}

async function runAttn(bundle: string, m: Manifest, layer: number, a: AttnCase) {
  const { hidden, kvHeads, headDim } = m.config;
  return runUnit(join(bundle, `layer${layer}.attn.onnx`), {
    hidden: f32(a.hidden, [a.B, a.S, hidden]),
    position_ids: i64(a.positions.flat(), [a.B, a.S]),
    ...cacheFeeds(a.pastKey, a.pastValue, a.B, a.P, kvHeads, headDim),
    ...rotaryFeeds(m.config),
    attention_mask: f32(a.mask, [a.B, 1, a.S, a.P + a.S]),
  });
}

function expectAttnClose(out: Awaited<ReturnType<typeof runAttn>>, ref: ReturnType<typeof attnReference>, tol: number) {
  for (const name of ['hidden_out', 'moe_input', 'router_logits', 'key', 'value'] as const) {
    expect(relErr(out[name].data, ref[name]), name).toBeLessThan(tol);
  }
}

describe('detectModel', () => {
  it.each([
    ['unimoe-4e', { layout: 'unimoe-4e', experts: 4, kvHeads: 4, ropeTheta: 10000, routing: { topK: 2, order: 'topk-softmax', renormalize: false } }],
    ['unimoe-8e', { layout: 'unimoe-8e', experts: 8, kvHeads: 4, ropeTheta: 10000, routing: { topK: 2, order: 'softmax-topk', renormalize: true } }],
    ['mixtral', { layout: 'mixtral', experts: 4, kvHeads: 2, ropeTheta: 1e6, routing: { topK: 2, order: 'topk-softmax', renormalize: false } }],
  ])('%s', async (fixture, expected) => {
    const config = await readJsonFile(join(FIXTURES, fixture, 'config.json'));
    const detected = await withCheckpoint(openCheckpoint(join(FIXTURES, fixture)), async (c) => detectModel(config, c.names(), 'config.json'));
    expect(detected.config).toMatchObject({ ...expected, hidden: 32, layers: 2, heads: 4, headDim: 8, intermediate: 48, vocab: 1000, rmsEps: 1e-5 });
    expect(detected.expertLora).toEqual(fixture === 'unimoe-8e' ? { r: 8, alpha: 16 } : undefined);
    const placeholder = detected.warnings.find((w) => w.includes('placeholder path (/path/to/'));
    expect(Boolean(placeholder)).toBe(fixture !== 'mixtral');
  });

  it('names what it found when the layout is unknown', () => {
    const names = ['model.embed_tokens.weight', 'model.layers.0.mlp.gate_proj.weight', 'model.layers.1.mlp.gate_proj.weight'];
    expect(() => detectModel({ model_type: 'llama' }, names, '/x/config.json')).toThrow(
      /unknown checkpoint layout.*"llama".*model\.layers\.N\.mlp\.gate_proj\.weight/,
    );
  });

  it('rejects a config that disagrees with the tensors', async () => {
    const config = (await readJsonFile(join(FIXTURES, 'mixtral', 'config.json'))) as Record<string, unknown>;
    const names = await withCheckpoint(openCheckpoint(join(FIXTURES, 'mixtral')), async (c) => c.names());
    expect(() => detectModel({ ...config, num_local_experts: 5 }, names, 'config.json')).toThrow(/5 experts.*layer 0 has 4/);
    expect(() => detectModel({ ...config, num_hidden_layers: 3 }, names, 'config.json')).toThrow(/num_hidden_layers is 3.*2 layers/);
    expect(() => detectModel({ ...config, rope_scaling: { type: 'linear', factor: 2 } }, names, 'config.json')).toThrow(/rope_scaling/);
  });
});

describe('convertCheckpoint', () => {
  it('unimoe-8e: merges per-expert LoRA; every unit matches float64 math over the raw tensors', async () => {
    const { ckpt, bundle, parent } = await stage('unimoe-8e');
    const m = await convertCheckpoint({ checkpointDir: ckpt, bundleDir: bundle });
    expect(await readdir(parent)).toEqual(['bundle', 'ckpt'].sort());
    expect(m).toMatchObject({ format: 'unimoe-bundle', version: 3, name: 'ckpt', dtype: 'float32', modalities: ['text'] });
    expect(m.units.map((u) => u.name)).toEqual([
      'embed',
      ...[0, 1].flatMap((l) => [`layer${l}.attn`, ...Array.from({ length: 8 }, (_, e) => `layer${l}.expert${e}`)]),
      'head',
    ]);
    expect(await readManifest(bundle)).toEqual(m);
    for (const u of m.units) await verifyUnit(bundle, u);
    expect(m.tokenizer.sha256).toMatch(/^[0-9a-f]{64}$/);

    const { hidden: H, intermediate: I, vocab: V } = m.config;
    await withCheckpoint(openCheckpoint(ckpt), async (c) => {
      const p = 'model.layers.1.mlp.deepspeed_moe.experts.deepspeed_experts.5.';
      const w: Record<string, Float64Array> = {};
      for (const [proj, out, inp] of [['gate', I, H], ['up', I, H], ['down', H, I]] as const) {
        const [base, a, b] = await Promise.all(['.weight', '_lora_A.weight', '_lora_B.weight'].map((s) => c.read(`${p}${proj}_proj${s}`)));
        w[proj] = merged64(base, a, b, out, inp, 8, 16 / 8);
      }
      const x = random(3 * H, 5, 2);
      const out = await runUnit(join(bundle, 'layer1.expert5.onnx'), { x: f32(x, [3, H]) });
      expect(relErr(out.y.data, expert64(x, 3, { gate: w.gate, up: w.up, down: w.down }, H, I))).toBeLessThan(1e-5);

      const l = 'model.layers.1.';
      const names = ['input_layernorm', 'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'post_attention_layernorm', 'mlp.deepspeed_moe.gate.wg'];
      const [inputNorm, q, k, v, o, postNorm, router] = await Promise.all(names.map((n) => c.read(`${l}${n}.weight`)));
      const a = attnCase(m);
      expectAttnClose(await runAttn(bundle, m, 1, a), attnReference(m.config, { inputNorm, q, k, v, o, postNorm, router }, a), 1e-5);

      const hidden = random(2 * H, 6, 2);
      const head = await runUnit(join(bundle, 'head.onnx'), { hidden: f32(hidden, [2, H]) });
      const ref = linear64(rmsNorm64(hidden, 2, await c.read('model.norm.weight'), m.config.rmsEps), 2, await c.read('lm_head.weight'), V, H);
      expect(relErr(head.logits.data, ref)).toBeLessThan(1e-5);

      const table = await c.read('model.embed_tokens.weight');
      const emb = await runUnit(join(bundle, 'embed.onnx'), { input_ids: i64([999, 1, 0], [3]) });
      expect(emb.hidden.data).toEqual(Float32Array.from([...table.subarray(999 * H, 1000 * H), ...table.subarray(H, 2 * H), ...table.subarray(0, H)]));
    });
  });

  it('unimoe-4e + PEFT adapter: merges LoRA into attention and experts, takes routers from non_lora_trainables', async () => {
    const { ckpt, bundle } = await stage('unimoe-4e');
    const adapterDir = join(FIXTURES, 'unimoe-4e-adapter');
    const m = await convertCheckpoint({ checkpointDir: ckpt, bundleDir: bundle, adapterDir, name: 'tuned' });
    expect(m.name).toBe('tuned');
    expect(m.source).toMatchObject({ layout: 'unimoe-4e', adapter: adapterDir });
    expect(m.source.warnings.some((w) => w.includes('mm_audio_tower is a placeholder path'))).toBe(true);
    expect(m.source.warnings.some((w) => w.includes('adapter tensors not applied'))).toBe(false);

    const { hidden: H, intermediate: I, heads, headDim } = m.config;
    await withCheckpoint(openCheckpoint(ckpt), async (base) =>
      withCheckpoint(openCheckpoint(adapterDir, { stem: 'adapter_model' }), async (ad) =>
        withCheckpoint(openCheckpointFile(join(adapterDir, 'non_lora_trainables.bin')), async (trainables) => {
          const withLora = async (name: string, out: number, inp: number) => {
            const stem = `base_model.model.${name}`;
            return merged64(await base.read(`${name}.weight`), await ad.read(`${stem}.lora_A.weight`), await ad.read(`${stem}.lora_B.weight`), out, inp, 8, 16 / 8);
          };
          const l = 'model.layers.0.';
          const w = {
            inputNorm: await base.read(`${l}input_layernorm.weight`),
            q: await withLora(`${l}self_attn.q_proj`, heads * headDim, H),
            k: await withLora(`${l}self_attn.k_proj`, heads * headDim, H),
            v: await withLora(`${l}self_attn.v_proj`, heads * headDim, H),
            o: await withLora(`${l}self_attn.o_proj`, H, heads * headDim),
            postNorm: await base.read(`${l}post_attention_layernorm.weight`),
            router: await trainables.read(`base_model.model.${l}mlp.gate.weight`),
          } as unknown as AttnWeights;
          expect(relErr(w.router, await base.read(`${l}mlp.gate.weight`))).toBeGreaterThan(1e-3); // the replacement differs
          const a = attnCase(m);
          expectAttnClose(await runAttn(bundle, m, 0, a), attnReference(m.config, w, a), 1e-5);

          const e = 'model.layers.1.mlp.experts.2.';
          const ew = { gate: await withLora(`${e}gate_proj`, I, H), up: await withLora(`${e}up_proj`, I, H), down: await withLora(`${e}down_proj`, H, I) };
          const x = random(4 * H, 3, 2);
          const out = await runUnit(join(bundle, 'layer1.expert2.onnx'), { x: f32(x, [4, H]) });
          expect(relErr(out.y.data, expert64(x, 4, ew, H, I))).toBeLessThan(1e-5);
        }),
      ),
    );
  });

  it('mixtral float16 bundle (bf16 safetensors, GQA, rope_theta 1e6): units within 2e-2 of float64', async () => {
    const { ckpt, bundle } = await stage('mixtral');
    const m = await convertCheckpoint({ checkpointDir: ckpt, bundleDir: bundle, dtype: 'float16' });
    expect(m.dtype).toBe('float16');
    for (const u of m.units) await verifyUnit(bundle, u);
    const { hidden: H, intermediate: I } = m.config;
    await withCheckpoint(openCheckpoint(ckpt), async (c) => {
      const l = 'model.layers.1.';
      const names = ['input_layernorm', 'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'post_attention_layernorm', 'block_sparse_moe.gate'];
      const [inputNorm, q, k, v, o, postNorm, router] = await Promise.all(names.map((n) => c.read(`${l}${n}.weight`)));
      const a = attnCase(m);
      expectAttnClose(await runAttn(bundle, m, 1, a), attnReference(m.config, { inputNorm, q, k, v, o, postNorm, router }, a), 2e-2);

      const e = `${l}block_sparse_moe.experts.3.`;
      const w = { gate: await c.read(`${e}w1.weight`), up: await c.read(`${e}w3.weight`), down: await c.read(`${e}w2.weight`) };
      const x = random(3 * H, 4, 2);
      const out = await runUnit(join(bundle, 'layer1.expert3.onnx'), { x: f32(x, [3, H]) });
      expect(relErr(out.y.data, expert64(x, 3, w, H, I))).toBeLessThan(2e-2);
    });
  });

  it('notes tensors it does not convert (multimodal parts) in source.warnings', async () => {
    const { ckpt, bundle } = await stage('mixtral');
    const tensors = await withCheckpoint(openCheckpoint(ckpt), async (c) =>
      Promise.all(c.names().map(async (name) => ({ name, dtype: 'F32' as const, shape: c.info(name).shape, data: await c.read(name) }))),
    );
    await rm(join(ckpt, 'model.safetensors'));
    const projector = { name: 'model.mm_projector.0.weight', dtype: 'F32' as const, shape: [32, 16], data: random(512, 1) };
    await writeSafetensors(join(ckpt, 'model.safetensors'), [...tensors, projector]);
    const m = await convertCheckpoint({ checkpointDir: ckpt, bundleDir: bundle });
    expect(m.source.warnings).toContainEqual(expect.stringMatching(/not converted.*model\.mm_projector\.\* \(1\)/));
  });
});

describe('convertCheckpoint failures leave no bundle and no temporary directory', () => {
  /** Stages a fixture (mixtral by default), breaks it with `prepare`, and expects conversion to fail with `error`. */
  async function expectFailure(prepare: (ckpt: string) => Promise<void>, error: RegExp, opts: { adapterDir?: string; fixture?: string; onProgress?: (m: string) => void } = {}) {
    const { parent, ckpt, bundle } = await stage(opts.fixture ?? 'mixtral');
    await prepare(ckpt);
    await expect(convertCheckpoint({ checkpointDir: ckpt, bundleDir: bundle, adapterDir: opts.adapterDir, onProgress: opts.onProgress })).rejects.toThrow(error);
    expect(await readdir(parent)).toEqual(['ckpt']);
  }

  async function rewrite(ckpt: string, edit: (t: { name: string; shape: number[]; data: Float32Array }[]) => typeof t) {
    const tensors = await withCheckpoint(openCheckpoint(ckpt), async (c) =>
      Promise.all(c.names().map(async (name) => ({ name, shape: c.info(name).shape, data: await c.read(name) }))),
    );
    await writeSafetensors(join(ckpt, 'model.safetensors'), edit(tensors).map((t) => ({ ...t, dtype: 'F32' as const })));
  }

  it('missing tensor: names the tensor and the file', async () => {
    const gone = 'model.layers.1.block_sparse_moe.experts.2.w3.weight';
    await expectFailure(
      (ckpt) => rewrite(ckpt, (ts) => ts.filter((t) => t.name !== gone)),
      new RegExp(`missing tensor ${gone.replace(/\./g, '\\.')} \\(layer 1 expert 2 up_proj\\): not in .*model\\.safetensors`),
    );
  });

  it('shape mismatch: names the tensor, the file, expected and actual shapes', async () => {
    const name = 'model.layers.1.self_attn.k_proj.weight';
    await expectFailure(
      (ckpt) => rewrite(ckpt, (ts) => ts.map((t) => (t.name === name ? { name, shape: [16, 31], data: t.data.subarray(0, 16 * 31) } : t))),
      /tensor model\.layers\.1\.self_attn\.k_proj\.weight \(layer 1 k\) in .*model\.safetensors has shape \[16, 31\], expected \[16, 32\]/,
    );
  });

  it('truncated checkpoint file: the error names the file', async () => {
    await expectFailure(
      async (ckpt) => truncate(join(ckpt, 'pytorch_model.bin'), 400_000),
      /pytorch_model\.bin/,
      { fixture: 'unimoe-8e' },
    );
  });

  it('no tokenizer in the checkpoint and none given', async () => {
    const { parent, ckpt, bundle } = await stage('mixtral', { tokenizer: false });
    await expect(convertCheckpoint({ checkpointDir: ckpt, bundleDir: bundle })).rejects.toThrow(/no tokenizer\.model .* or tokenizer\.json .* found; pass --tokenizer PATH/);
    expect(await readdir(parent)).toEqual(['ckpt']);
  });

  it('--tokenizer names a file that is not there', async () => {
    const { parent, ckpt, bundle } = await stage('mixtral', { tokenizer: false });
    await expect(convertCheckpoint({ checkpointDir: ckpt, bundleDir: bundle, tokenizer: join(parent, 'nope.json') })).rejects.toThrow(/nope\.json: cannot read the tokenizer \(ENOENT\)/);
  });

  it('unknown layout', async () => {
    await expectFailure(
      (ckpt) => rewrite(ckpt, (ts) => ts.map((t) => ({ ...t, name: t.name.replace('block_sparse_moe', 'moe_block') }))),
      /unknown checkpoint layout/,
    );
  });

  it('a failure halfway through writing units removes the partial output', async () => {
    let seen = 0;
    await expectFailure(async () => {}, /stop after 3 units/, {
      onProgress: (msg) => {
        if (msg.startsWith('[') && ++seen === 3) throw new Error('stop after 3 units');
      },
    });
  });

  it('a bundle directory that already holds files', async () => {
    const { ckpt, parent } = await stage('mixtral');
    await expect(convertCheckpoint({ checkpointDir: ckpt, bundleDir: ckpt })).rejects.toThrow(/ckpt already exists and is not an empty directory/);
    expect(await readdir(parent)).toEqual(['ckpt']);
  });

  it('a bad adapter config', async () => {
    const adapterParent = await mkdtemp(join(tmpdir(), 'unimoe-adapter-'));
    scratch.push(adapterParent);
    await cp(join(FIXTURES, 'unimoe-4e-adapter'), adapterParent, { recursive: true });
    await writeFile(join(adapterParent, 'adapter_config.json'), JSON.stringify({ r: 8 }));
    await expectFailure(async () => {}, /adapter_config\.json: lora_alpha must be a positive number/, { fixture: 'unimoe-4e', adapterDir: adapterParent });
  });
});

describe('bundle integrity checks', () => {
  it('verifyUnit catches a changed byte and a changed size; readManifest names bad fields', async () => {
    const { ckpt, bundle } = await stage('mixtral');
    const m = await convertCheckpoint({ checkpointDir: ckpt, bundleDir: bundle });
    const unit = m.units.find((u) => u.name === 'layer0.expert1')!;
    const path = join(bundle, unit.file);
    const bytes = await readFile(path);
    bytes[bytes.length - 10] ^= 0xff;
    await writeFile(path, bytes);
    await expect(verifyUnit(bundle, unit)).rejects.toThrow(/unit layer0\.expert1: .*layer0\.expert1\.onnx has sha256 [0-9a-f]{64}, the manifest says/);
    await truncate(path, 100);
    await expect(verifyUnit(bundle, unit)).rejects.toThrow(/has 100 bytes, the manifest says \d+/);

    const bad = { ...m, units: [{ ...m.units[0], file: '../../etc/passwd', bytes: -1 }, ...m.units.slice(1)] };
    await writeFile(join(bundle, 'manifest.json'), JSON.stringify(bad));
    await expect(readManifest(bundle)).rejects.toThrow(/manifest\.json: invalid bundle manifest: units\.0\.file: must be a path inside the bundle; units\.0\.bytes/);

    // A bundle written before the attention units read the KV cache in place: a clear re-convert message.
    await writeFile(join(bundle, 'manifest.json'), JSON.stringify({ ...m, version: 1 }));
    await expect(readManifest(bundle)).rejects.toThrow(/manifest\.json: bundle version 1 was written by an older unimoe .*re-convert the checkpoint with `unimoe convert`/);
    // Version 2 (attn units with their own rotary tables) still loads; a newer version than this code is refused.
    await writeFile(join(bundle, 'manifest.json'), JSON.stringify({ ...m, version: 2 }));
    expect((await readManifest(bundle)).version).toBe(2);
    await writeFile(join(bundle, 'manifest.json'), JSON.stringify({ ...m, version: 4 }));
    await expect(readManifest(bundle)).rejects.toThrow(/manifest\.json: bundle version 4 is newer than this unimoe reads \(2-3\); upgrade unimoe/);
  });
});
