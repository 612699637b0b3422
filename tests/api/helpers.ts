/** Shared setup of the API end-to-end tests: a real bundle converted from the tiny 4e fixture, references from Python. */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { modelFixture } from '../helpers/fixtures';

export const MODEL = 'tiny-4e';
export const VICUNA_SYSTEM =
  "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

export async function convertTinyBundle(dir: string): Promise<string> {
  const bundleDir = join(dir, 'bundle');
  await convertCheckpoint({ checkpointDir: modelFixture('unimoe-4e'), bundleDir, name: MODEL });
  return bundleDir;
}

/**
 * The reference tokenizer: Python's sentencepiece on the fixture's tokenizer.model, run through
 * /usr/bin/python3. Encodes a one-turn vicuna_v1 prompt (BOS + pieces) and decodes generated ids.
 */
export function pythonSentencePiece(request: { encode?: string[]; decode?: number[][]; pieces?: boolean }): { encoded: number[][]; decoded: string[]; pieces?: string[] } {
  const code = `
import json, sys, sentencepiece as spm
req = json.load(sys.stdin)
sp = spm.SentencePieceProcessor(model_file=req["model"])
print(json.dumps({"encoded": [[sp.bos_id()] + sp.encode(t) for t in req.get("encode", [])],
                  "decoded": [sp.decode(ids) for ids in req.get("decode", [])],
                  "pieces": [sp.id_to_piece(i) for i in range(sp.get_piece_size())] if req.get("pieces") else None}))
`;
  const input = JSON.stringify({ model: join(modelFixture('unimoe-4e'), 'tokenizer.model'), ...request });
  const out = spawnSync('/usr/bin/python3', ['-c', code], { input, encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`python sentencepiece failed: ${out.stderr}`);
  return JSON.parse(out.stdout);
}

export const vicunaPrompt = (user: string) => `${VICUNA_SYSTEM} USER: ${user} ASSISTANT:`;

/** Reads an SSE response body into its `data:` payloads. */
export async function readSse(res: Response): Promise<string[]> {
  const text = await res.text();
  return text
    .split('\n\n')
    .filter((e) => e.trim())
    .map((e) => {
      if (!e.startsWith('data: ')) throw new Error(`not an SSE data event: ${JSON.stringify(e)}`);
      return e.slice('data: '.length);
    });
}

export async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
