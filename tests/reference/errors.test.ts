/** Bad checkpoints, configs, adapters and inputs give errors that name the file / tensor / field. */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadReferenceModel } from './reference-model';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'models');
const scratch = mkdtempSync(join(tmpdir(), 'unimoe-reference-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A copy of a fixture checkpoint with its config.json edited. */
function withConfig(fixture: string, edit: (cfg: Record<string, unknown>) => void): string {
  const dir = join(scratch, `${fixture}-${Math.random().toString(36).slice(2)}`);
  cpSync(join(FIXTURES, fixture), dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(cfg);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  return dir;
}

describe('config.json problems', () => {
  it('an unsupported model_type names the file and the value', async () => {
    const dir = withConfig('unimoe-4e', (c) => (c.model_type = 'llama'));
    await expect(loadReferenceModel(dir)).rejects.toThrow(/config\.json: model_type "llama".*not a supported MoE layout/);
  });

  it('llava without moe is rejected', async () => {
    const dir = withConfig('unimoe-4e', (c) => delete c.moe);
    await expect(loadReferenceModel(dir)).rejects.toThrow(/"llava" without "moe": true/);
  });

  it('a missing or malformed field is named', async () => {
    const dir = withConfig('unimoe-4e', (c) => (c.hidden_size = 'big'));
    await expect(loadReferenceModel(dir)).rejects.toThrow(/config\.json: field "hidden_size" must be a number/);
    const dir2 = withConfig('mixtral', (c) => (c.num_key_value_heads = 3));
    await expect(loadReferenceModel(dir2)).rejects.toThrow(/num_attention_heads 4 is not a multiple of num_key_value_heads 3/);
  });

  it('8e without lora_r is rejected', async () => {
    const dir = withConfig('unimoe-8e', (c) => delete c.lora_r);
    await expect(loadReferenceModel(dir)).rejects.toThrow(/field "lora_r"/);
  });
});

describe('checkpoint / config mismatches', () => {
  it('a layout whose tensors are absent names the missing tensor', async () => {
    const dir = withConfig('mixtral', (c) => {
      c.model_type = 'llava';
      c.moe = true;
      c.num_experts = 4;
    });
    await expect(loadReferenceModel(dir)).rejects.toThrow(
      /no tensor model\.layers\.0\.mlp\.experts\.0\.gate_proj\.weight, which the unimoe-4e layout needs/,
    );
  });

  it('a shape that disagrees with config.json names tensor, file and both shapes', async () => {
    const dir = withConfig('unimoe-4e', (c) => (c.intermediate_size = 64));
    await expect(loadReferenceModel(dir)).rejects.toThrow(
      /pytorch_model-00001-of-00002\.bin \[model\.layers\.0\.mlp\.experts\.0\.gate_proj\.weight\]: shape \[48, 32\], expected \[64, 32\]/,
    );
  });
});

describe('adapter problems', () => {
  it('an adapter whose LoRA targets are not in the decoder is rejected, naming the target', async () => {
    await expect(
      loadReferenceModel(join(FIXTURES, 'unimoe-8e'), { adapterDir: join(FIXTURES, 'unimoe-4e-adapter') }),
    ).rejects.toThrow(/targets model\.layers\.\d\.mlp\.experts\.0\.gate_proj\.weight, which the unimoe-8e decoder does not use/);
  });

  it('a rank that disagrees with adapter_config.json is named', async () => {
    const dir = join(scratch, 'adapter-r4');
    cpSync(join(FIXTURES, 'unimoe-4e-adapter'), dir, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, r: 4 }));
    await expect(loadReferenceModel(join(FIXTURES, 'unimoe-4e'), { adapterDir: dir })).rejects.toThrow(
      /adapter_model\.bin \[base_model\.model\.model\.layers\.0\..*lora_A\.weight\]: LoRA rank 8\/8 does not match r=4/,
    );
  });

  it('a missing adapter_config.json is named', async () => {
    await expect(loadReferenceModel(join(FIXTURES, 'unimoe-4e'), { adapterDir: join(FIXTURES, 'unimoe-8e') })).rejects.toThrow(
      /unimoe-8e\/adapter_config\.json: cannot read/,
    );
  });
});

describe('bad token ids', () => {
  it('empty, out-of-vocabulary and non-integer ids are rejected', async () => {
    const model = await loadReferenceModel(join(FIXTURES, 'mixtral'));
    expect(() => model.forward([])).toThrow(/ids must not be empty/);
    expect(() => model.forward([1, 1000])).toThrow(/token id 1000 is outside the vocabulary \[0, 1000\)/);
    expect(() => model.forward([1.5])).toThrow(/token id 1.5/);
    expect(() => model.greedy([1], -1)).toThrow(/steps must be a non-negative integer/);
  });
});
