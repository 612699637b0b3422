/** The XGrammar wrapper over the tiny SentencePiece vocabulary: masks, termination, bad schemas. */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { loadSentencePiece, sentencePieceText } from '@unimoe/shared/tokenizer/index';
import { createXGrammar, GrammarError } from './xgrammar';

const TOKENIZER = new URL('../../../tests/fixtures/models/unimoe-4e/tokenizer.model', import.meta.url);
const EOS = 2;

async function setup() {
  const sp = loadSentencePiece(new Uint8Array(await readFile(TOKENIZER)));
  const tokenizer = sentencePieceText(sp);
  const grammar = await createXGrammar(tokenizer, tokenizer.vocabSize, [EOS]);
  const allowed = (mask: Int32Array) => Array.from({ length: tokenizer.vocabSize }, (_, i) => i).filter((i) => ((mask[i >> 5]! >>> (i & 31)) & 1) === 1);
  return { sp, tokenizer, grammar, allowed };
}

describe('XGrammar constraints', () => {
  it('walks a schema token by token: only allowed ids, then EOS, then terminated', async () => {
    const { sp, grammar, allowed } = await setup();
    const compiled = await grammar.compile({ type: 'json_schema', schema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] } });
    const m = await compiled.matcher();
    // Feed `{"ok":true}` one byte piece at a time (the tokenizer has byte fallback for every character).
    for (const ch of '{"ok":true}') {
      const id = sp.pieceToId(`<0x${ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}>`)!;
      expect(allowed(await m.allowed())).toContain(id);
      expect(m.accept(id)).toBe(true);
    }
    expect(allowed(await m.allowed())).toEqual([EOS]);
    expect(m.isTerminated()).toBe(false);
    expect(m.accept(EOS)).toBe(true);
    expect(m.isTerminated()).toBe(true);
    m.dispose();
    grammar.dispose();
  });

  it('length-bounded strings refuse control characters (the EBNF fix), as unbounded ones do', async () => {
    const { sp, grammar, allowed } = await setup();
    for (const name of [{ type: 'string', maxLength: 6 }, { type: 'string' }]) {
      const m = await (await grammar.compile({ type: 'json_schema', schema: { type: 'object', properties: { name }, required: ['name'] } })).matcher();
      for (const ch of '{"name":"') m.accept(sp.pieceToId(`<0x${ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}>`)!);
      const ids = allowed(await m.allowed());
      expect(ids).not.toContain(sp.pieceToId('<0x11>'));
      expect(ids).not.toContain(sp.pieceToId('<0x0A>'));
      expect(ids).toContain(sp.pieceToId('<0x61>'));
      m.dispose();
    }
    grammar.dispose();
  });

  it('a schema it cannot compile is a GrammarError', async () => {
    const { grammar } = await setup();
    await expect(grammar.compile({ type: 'json_schema', schema: { $ref: '#/nowhere' } })).rejects.toBeInstanceOf(GrammarError);
    grammar.dispose();
  });
});
