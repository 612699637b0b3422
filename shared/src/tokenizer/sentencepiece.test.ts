import protobuf from 'protobufjs/minimal';
import { describe, expect, it } from 'vitest';
import { loadSentencePiece } from './sentencepiece';
import { fixtures, readModel, type ModelFixture } from './test-fixtures';

describe.each([
  ['LLaMA-style BPE (identity, byte fallback)', fixtures.llama],
  ['nmt_nfkc BPE (user-defined symbols, no byte fallback)', fixtures.nfkc],
  ['hand-written BPE with UNUSED pieces', fixtures.unused],
] as [string, ModelFixture][])('%s against the Python sentencepiece library', (_name, fixture) => {
  const tokenizer = loadSentencePiece(readModel(fixture));

  it('has the same special ids and vocabulary size', () => {
    expect(tokenizer.vocabSize).toBe(fixture.vocabSize);
    expect(tokenizer.bos).toBe(fixture.bos);
    expect(tokenizer.eos).toBe(fixture.eos);
    expect(tokenizer.unk).toBe(fixture.unk);
    expect(tokenizer.pad).toBe(fixture.pad === -1 ? null : fixture.pad);
  });

  it(`encodes all ${fixture.encode.length} texts to the same ids`, () => {
    const mismatches = fixture.encode
      .map((c) => ({ text: c.text, expected: c.pieces, got: tokenizer.encode(c.text).map((id) => tokenizer.idToPiece(id)) }))
      .filter((m) => JSON.stringify(m.got) !== JSON.stringify(m.expected));
    expect(mismatches).toEqual([]);
    for (const c of fixture.encode) expect(tokenizer.encode(c.text)).toEqual(c.ids);
  });

  it('decodes the encoded ids to the same text', () => {
    for (const c of fixture.encode) expect(tokenizer.decode(c.ids)).toBe(c.decoded);
  });

  it('decodes arbitrary id sequences (control, unknown, broken UTF-8 bytes) to the same text', () => {
    for (const c of fixture.decode) expect(tokenizer.decode(c.ids)).toBe(c.decoded);
  });

  it('maps ids to pieces and back', () => {
    for (const c of fixture.encode) {
      c.ids.forEach((id, k) => {
        expect(tokenizer.idToPiece(id)).toBe(c.pieces[k]);
        expect(tokenizer.pieceToId(c.pieces[k]!)).toBe(id);
      });
    }
  });
});

describe('LLaMA-style tokenizer behaviour', () => {
  const tokenizer = loadSentencePiece(readModel(fixtures.llama));

  it('round-trips text that does not itself contain U+2581', () => {
    const texts = fixtures.llama.encode.map((c) => c.text).filter((t) => !t.includes('\u2581'));
    expect(texts.length).toBeGreaterThan(250);
    for (const text of texts) expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
  });

  it('encodes characters outside the vocabulary as UTF-8 byte pieces', () => {
    const pieces = tokenizer.encode('😀').map((id) => tokenizer.idToPiece(id));
    expect(pieces).toEqual(['\u2581', '<0xF0>', '<0x9F>', '<0x98>', '<0x80>']);
  });

  it('adds no BOS and encodes the empty string to nothing', () => {
    expect(tokenizer.encode('')).toEqual([]);
    expect(tokenizer.encode('Hello')[0]).not.toBe(tokenizer.bos);
  });

  it('rejects ids outside the vocabulary', () => {
    expect(() => tokenizer.decode([5, 1000])).toThrow(/invalid token id 1000: the vocabulary has 1000 pieces/);
    expect(() => tokenizer.decode([-1])).toThrow(/invalid token id -1/);
    expect(() => tokenizer.decode([1.5])).toThrow(/invalid token id 1.5/);
    expect(() => tokenizer.idToPiece(1000)).toThrow(/invalid token id 1000/);
  });
});

// Hand-built ModelProto bytes for the error paths (field numbers from sentencepiece_model.proto).
type Piece = [piece: string, score: number, type: number];
const LLAMA_PIECES: Piece[] = [
  ['<unk>', 0, 2],
  ['<s>', 0, 3],
  ['</s>', 0, 3],
  ['\u2581', -1, 1],
  ['a', -2, 1],
];

function buildModel(options: {
  pieces?: Piece[];
  modelType?: number;
  byteFallback?: boolean;
  bosId?: number;
  suffix?: boolean;
  charsmap?: Uint8Array;
}): Uint8Array {
  const w = protobuf.Writer.create();
  for (const [piece, score, type] of options.pieces ?? LLAMA_PIECES) {
    w.uint32((1 << 3) | 2).fork();
    w.uint32((1 << 3) | 2).string(piece);
    w.uint32((2 << 3) | 5).float(score);
    w.uint32((3 << 3) | 0).int32(type);
    w.ldelim();
  }
  w.uint32((2 << 3) | 2).fork();
  w.uint32((3 << 3) | 0).int32(options.modelType ?? 2);
  if (options.byteFallback !== undefined) w.uint32((35 << 3) | 0).bool(options.byteFallback);
  if (options.bosId !== undefined) w.uint32((41 << 3) | 0).int32(options.bosId);
  if (options.suffix) w.uint32((24 << 3) | 0).bool(true);
  w.ldelim();
  w.uint32((3 << 3) | 2).fork();
  w.uint32((1 << 3) | 2).string('identity');
  if (options.charsmap) w.uint32((2 << 3) | 2).bytes(options.charsmap);
  w.uint32((4 << 3) | 0).bool(false);
  w.ldelim();
  return w.finish();
}

describe('malformed or unsupported model files', () => {
  const real = readModel(fixtures.llama);

  it('accepts the hand-built baseline model', () => {
    const tokenizer = loadSentencePiece(buildModel({}));
    expect(tokenizer.encode('aa')).toEqual([3, 4, 4]);
  });

  it.each([
    ['an empty file', new Uint8Array(0), /malformed SentencePiece model: file is empty/],
    ['a truncated model', real.subarray(0, Math.floor(real.length / 2)), /malformed SentencePiece model/],
    ['a text file', new TextEncoder().encode('{"not": "a sentencepiece model"}\n'), /malformed SentencePiece model/],
    ['random bytes', Uint8Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24), /malformed SentencePiece model/],
    ['a UNIGRAM model', buildModel({ modelType: 1 }), /unsupported SentencePiece model: model_type UNIGRAM/],
    ['treat_whitespace_as_suffix', buildModel({ suffix: true }), /unsupported SentencePiece model: treat_whitespace_as_suffix/],
    ['no UNKNOWN piece', buildModel({ pieces: LLAMA_PIECES.slice(1) }), /no UNKNOWN piece/],
    ['a duplicated piece', buildModel({ pieces: [...LLAMA_PIECES, ['a', -3, 1]] }), /piece "a" is defined twice \(ids 4 and 5\)/],
    ['a BYTE piece without byte_fallback', buildModel({ pieces: [...LLAMA_PIECES, ['<0x41>', 0, 6]] }), /byte_fallback is false/],
    ['a malformed BYTE piece', buildModel({ pieces: [...LLAMA_PIECES, ['<0xZZ>', 0, 6]], byteFallback: true }), /not of the form <0xNN>/],
    ['bos_id on a NORMAL piece', buildModel({ bosId: 4 }), /trainer_spec.bos_id 4 points at "a" of type NORMAL, expected CONTROL/],
    ['bos_id disabled', buildModel({ bosId: -1 }), /trainer_spec.bos_id is -1: a BOS and an EOS piece are required/],
    ['bos_id out of range', buildModel({ bosId: 99 }), /trainer_spec.bos_id 99 is outside the vocabulary/],
    ['a broken precompiled_charsmap', buildModel({ charsmap: new Uint8Array([255, 255, 0, 0, 1, 2]) }), /precompiled_charsmap is broken/],
  ])('rejects %s with a clear error', (_name, bytes, message) => {
    expect(() => loadSentencePiece(bytes)).toThrow(message);
  });
});
