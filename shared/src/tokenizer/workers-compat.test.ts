// The edge also runs on Cloudflare Workers: no Node built-ins and no code generation from strings
// (eval / new Function), which is what ruled out protobufjs reflection and emscripten builds. Hugging
// Face tokenizer.json support uses @huggingface/tokenizers, which is plain JS without either.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { fixtures, REPO_ROOT } from './test-fixtures';

const DIR = `${REPO_ROOT}shared/src/tokenizer/`;
const runtimeModules = readdirSync(DIR).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && f !== 'test-fixtures.ts');

describe('Workers-compatible tokenizer', () => {
  it('imports nothing but its own modules, protobufjs/minimal and the pure-JS @huggingface/tokenizers', () => {
    expect(runtimeModules).toContain('index.ts');
    const foreign = runtimeModules.flatMap((file) =>
      [...readFileSync(DIR + file, 'utf8').matchAll(/^(?:import|export)[^'"]*from\s+'([^']+)'/gm)]
        .map((m) => m[1]!)
        .filter((specifier) => !specifier.startsWith('./') && specifier !== 'protobufjs/minimal' && specifier !== '@huggingface/tokenizers')
        .map((specifier) => `${file}: ${specifier}`),
    );
    expect(foreign).toEqual([]);
  });

  it('loads, encodes and decodes with code generation from strings disabled', () => {
    const sample = fixtures.llama.encode.find((c) => c.text.includes('😀') && c.text.length > 10)!;
    const script = `
      const { readFileSync } = await import('node:fs');
      const { loadSentencePiece, createStreamDecoder, loadHuggingFaceTokenizer } = await import(${JSON.stringify(`${DIR}index.ts`)});
      let blocked = false;
      try { new Function('return 1'); } catch { blocked = true; }
      const tokenizer = loadSentencePiece(new Uint8Array(readFileSync(${JSON.stringify(`${REPO_ROOT}${fixtures.llama.model}`)})));
      const ids = tokenizer.encode(${JSON.stringify(sample.text)});
      const stream = createStreamDecoder(tokenizer);
      const streamed = ids.map((id) => stream.push(id)).join('') + stream.flush();
      const hf = loadHuggingFaceTokenizer(readFileSync(${JSON.stringify(`${REPO_ROOT}tests/fixtures/tokenizer/byte-level-bpe/tokenizer.json`)}, 'utf8'));
      const hfIds = hf.encode(${JSON.stringify(sample.text)});
      console.log(JSON.stringify({ blocked, ids, decoded: tokenizer.decode(ids), streamed, hfRoundTrip: hf.decode(hfIds) }));
    `;
    const output = execFileSync(
      process.execPath,
      ['--disallow-code-generation-from-strings', '--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: REPO_ROOT, encoding: 'utf8' },
    );
    const result = JSON.parse(output.trim().split('\n').pop()!);
    expect(result).toEqual({ blocked: true, ids: sample.ids, decoded: sample.decoded, streamed: sample.decoded, hfRoundTrip: sample.text });
  });
});
