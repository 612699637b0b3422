/** How requests end: abort, stop tokens, EOS, max tokens, context limit, bad input and failing steps. */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelConfig } from '@unimoe/shared/model/config';
import { createEngine, type Engine } from './engine';
import type { ExpertBackend, ExpertBatch } from './expert-backend';
import { slotCapacity } from './kv-cache';
import { LocalExpertBackend } from './local-experts';
import { convertFixture, type TestBundle } from './test-bundle';
import type { SamplingParams } from './types';

const greedy = (maxTokens: number, stopTokenIds?: number[]): SamplingParams => ({ maxTokens, temperature: 0, topP: 1, topK: 0, stopTokenIds });
const promptA = [1, 15, 300, 42, 7];
const promptB = [1, 900, 12];
const promptC = Array.from({ length: 11 }, (_, i) => 100 + i * 7);

let bundle: TestBundle;
let engine: Engine;
let alone: Record<string, number[]>;
const editedDirs: string[] = [];

async function copyBundle(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'unimoe-engine-edit-'));
  editedDirs.push(dir);
  await cp(bundle.dir, dir, { recursive: true });
  return dir;
}

/** A copy of the bundle whose manifest config has `patch` applied (unit files untouched). */
async function bundleWithConfig(patch: Partial<ModelConfig>): Promise<string> {
  const dir = await copyBundle();
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  Object.assign(manifest.config, patch);
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return dir;
}

beforeAll(async () => {
  bundle = await convertFixture('unimoe-4e');
  engine = await createEngine({ bundleDir: bundle.dir, maxBatch: 4, prefillChunk: 4 });
  alone = {};
  for (const [name, p] of Object.entries({ promptA, promptB, promptC })) alone[name] = (await engine.generate({ promptIds: p, params: greedy(20, []) })).ids;
});
afterAll(async () => {
  await engine?.close();
  await bundle?.cleanup();
  await Promise.all(editedDirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('engine lifecycle', () => {
  it('abort mid-generation frees that cache at once and the others carry on unchanged', async () => {
    const { kvHeads, headDim, layers } = engine.manifest.config;
    const controller = new AbortController();
    let reservedAtAbort = -1;
    let reservedAfterAbort = -1;
    let seen = 0;
    const victim = engine
      .generate({
        promptIds: promptB,
        params: greedy(20, []),
        signal: controller.signal,
        onToken: () => {
          if (++seen === 3) {
            reservedAtAbort = engine.kvReservedBytes();
            controller.abort();
          }
        },
      })
      .then((r) => {
        reservedAfterAbort = engine.kvReservedBytes();
        return r;
      });
    const others = [engine.generate({ promptIds: promptA, params: greedy(20, []) }), engine.generate({ promptIds: promptC, params: greedy(20, []) })];
    const v = await victim;
    expect(v.finishReason).toBe('abort');
    expect(v.ids).toEqual(alone.promptB.slice(0, 3));
    // The victim's whole slot (prompt + maxTokens - 1 positions, rounded up to its class) is released.
    const victimBytes = 2 * layers * slotCapacity(promptB.length + 19) * kvHeads * headDim * 4;
    expect(reservedAtAbort - reservedAfterAbort).toBe(victimBytes);
    const [a, c] = await Promise.all(others);
    expect(a.ids).toEqual(alone.promptA);
    expect(c.ids).toEqual(alone.promptC);
    expect(engine.kvCacheBytes()).toBe(0);
  });

  it('abort of a waiting or already-aborted request resolves with no tokens', async () => {
    const one = await createEngine({ bundleDir: bundle.dir, maxBatch: 1 });
    try {
      const controller = new AbortController();
      const running = one.generate({ promptIds: promptA, params: greedy(10, []) });
      const waiting = one.generate({ promptIds: promptB, params: greedy(10, []), signal: controller.signal });
      expect(one.stats().waiting).toBe(1);
      controller.abort();
      expect(await waiting).toMatchObject({ ids: [], finishReason: 'abort', completionTokens: 0 });
      expect(one.stats().waiting).toBe(0);
      expect((await running).ids).toEqual(alone.promptA.slice(0, 10));
      const pre = await one.generate({ promptIds: promptA, params: greedy(5), signal: AbortSignal.abort() });
      expect(pre.finishReason).toBe('abort');
    } finally {
      await one.close();
    }
  });

  it('stops on a stop token (kept as the last id), on max tokens, and on the model EOS', async () => {
    const stopId = alone.promptA[4];
    const firstAt = alone.promptA.indexOf(stopId);
    const stopped = await engine.generate({ promptIds: promptA, params: greedy(20, [stopId]) });
    expect(stopped).toMatchObject({ ids: alone.promptA.slice(0, firstAt + 1), finishReason: 'stop', promptTokens: 5, completionTokens: firstAt + 1 });

    const tokens: number[] = [];
    const capped = await engine.generate({ promptIds: promptA, params: greedy(6), onToken: (id) => void tokens.push(id) });
    expect(capped.finishReason).toBe('length');
    expect(capped.ids).toEqual(alone.promptA.slice(0, 6));
    expect(tokens).toEqual(capped.ids);

    // The model's EOS always stops, without being listed: make the bundle's EOS a token greedy reaches.
    const eos = alone.promptC[3];
    const eosEngine = await createEngine({ bundleDir: await bundleWithConfig({ eos }) });
    try {
      const r = await eosEngine.generate({ promptIds: promptC, params: greedy(20) });
      expect(r.finishReason).toBe('stop');
      expect(r.ids).toEqual(alone.promptC.slice(0, alone.promptC.indexOf(eos) + 1));
    } finally {
      await eosEngine.close();
    }
  });

  it('rejects bad requests with specific errors and keeps serving the rest', async () => {
    const good = engine.generate({ promptIds: promptA, params: greedy(8) });
    await expect(engine.generate({ promptIds: [1, 1000], params: greedy(4) })).rejects.toThrow(/promptIds\[1\] = 1000 is not a token id in \[0, 1000\)/);
    await expect(engine.generate({ promptIds: [], params: greedy(4) })).rejects.toThrow(/non-empty/);
    await expect(engine.generate({ promptIds: [1], params: greedy(0) })).rejects.toThrow(/maxTokens must be an integer >= 1/);
    await expect(engine.generate({ promptIds: [1], params: { ...greedy(3), topP: 1.5 } })).rejects.toThrow(/topP/);
    await expect(engine.generate({ promptIds: [1], params: { ...greedy(3), temperature: 1, seed: 0.5 } })).rejects.toThrow(/seed/);
    await expect(engine.logits([-1])).rejects.toThrow(/promptIds\[0\] = -1/);
    const throwing = engine.generate({
      promptIds: promptB,
      params: greedy(8),
      onToken: () => {
        throw new Error('client went away');
      },
    });
    await expect(throwing).rejects.toThrow(/onToken callback threw: client went away/);
    expect((await good).ids).toEqual(alone.promptA.slice(0, 8));
  });

  it('refuses a request that would run past maxPositions, alone, while others proceed', async () => {
    const small = await createEngine({ bundleDir: await bundleWithConfig({ maxPositions: 16 }) });
    try {
      const ok = small.generate({ promptIds: promptA, params: greedy(11) });
      await expect(small.generate({ promptIds: promptC, params: greedy(6) })).rejects.toThrow(
        /prompt \(11 tokens\) \+ maxTokens \(6\) exceeds the model's 16 positions/,
      );
      await expect(small.logits(new Array(17).fill(5))).rejects.toThrow(/prompt \(17 tokens\) exceeds the model's 16 positions/);
      expect((await ok).ids).toEqual(alone.promptA.slice(0, 11));
    } finally {
      await small.close();
    }
  });

  it('a failing expert step fails only the requests in that step; the loop keeps serving', async () => {
    const local = await LocalExpertBackend.open(bundle.dir);
    let calls = 0;
    const flaky: ExpertBackend = {
      async runExperts(batches: ExpertBatch[]) {
        if (++calls === 5) throw new Error('pool layer1 unreachable');
        return local.runExperts(batches);
      },
      close: () => local.close(),
    };
    const e = await createEngine({ bundleDir: bundle.dir, experts: flaky });
    try {
      const hit = e.generate({ promptIds: promptA, params: greedy(10) });
      await expect(hit).rejects.toThrow(/generation step failed: pool layer1 unreachable/);
      expect(e.kvCacheBytes()).toBe(0);
      expect((await e.generate({ promptIds: promptC, params: greedy(20, []) })).ids).toEqual(alone.promptC);
    } finally {
      await e.close();
      await local.close(); // a backend passed in stays the caller's to close
    }
  });

  it('a corrupt unit file is named: at start for dense units and eager experts, per request for lazy experts', async () => {
    const dir = await copyBundle();
    const file = join(dir, 'layer1.expert2.onnx');
    const bytes = await readFile(file);
    bytes[bytes.length - 1] ^= 0xff;
    await writeFile(file, bytes);
    await expect(createEngine({ bundleDir: dir, eagerExperts: true })).rejects.toThrow(/unit layer1\.expert2: .* has sha256 [0-9a-f]{64}, the manifest says/);
    const lazy = await createEngine({ bundleDir: dir });
    try {
      // every prompt routes through every expert of a layer within a few tokens of a 4-expert model
      await expect(lazy.generate({ promptIds: promptC, params: greedy(20) })).rejects.toThrow(/generation step failed: unit layer1\.expert2/);
      expect(lazy.stats()).toMatchObject({ running: 0, waiting: 0 });
    } finally {
      await lazy.close();
    }
    const dense = await copyBundle();
    await writeFile(join(dense, 'layer0.attn.onnx'), 'not a model');
    await expect(createEngine({ bundleDir: dense })).rejects.toThrow(/unit layer0\.attn: .* has 11 bytes, the manifest says/);
  });

  it('close rejects pending and new requests', async () => {
    const e = await createEngine({ bundleDir: bundle.dir, maxBatch: 1 });
    const running = e.generate({ promptIds: promptA, params: greedy(20) });
    const waiting = e.generate({ promptIds: promptB, params: greedy(20) });
    const closing = e.close();
    await expect(waiting).rejects.toThrow(/engine closed/);
    await expect(running).rejects.toThrow(/engine closed/);
    await closing;
    await expect(e.generate({ promptIds: promptA, params: greedy(2) })).rejects.toThrow(/engine closed/);
  });
});
