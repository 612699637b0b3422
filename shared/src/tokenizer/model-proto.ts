// Decoder for the subset of SentencePiece's `sentencepiece_model.proto` (ModelProto) that encoding and
// decoding need. Field numbers follow sentencepiece/src/sentencepiece_model.proto.
//
// Written against protobufjs' low-level `Reader` instead of reflection (`Type.decode`) because
// reflection generates its decoders with `new Function`, which Cloudflare Workers forbid.
import protobuf from 'protobufjs/minimal';

export enum PieceType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

export enum ModelType {
  UNIGRAM = 1,
  BPE = 2,
  WORD = 3,
  CHAR = 4,
}

export interface ModelPiece {
  piece: string;
  score: number;
  type: PieceType;
}

export interface TrainerSpec {
  modelType: ModelType;
  vocabSize: number;
  byteFallback: boolean;
  treatWhitespaceAsSuffix: boolean;
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
  unkSurface: string;
}

export interface NormalizerSpec {
  name: string;
  precompiledCharsmap: Uint8Array;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
}

export interface SentencePieceModelProto {
  pieces: ModelPiece[];
  trainerSpec: TrainerSpec;
  normalizerSpec: NormalizerSpec;
  /** Present only when the model carries a denormalizer (rare; not supported for decoding). */
  denormalizerSpec: NormalizerSpec | null;
}

type Reader = protobuf.Reader;

/** Wire type of a field key: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32. */
function expectWireType(key: number, expected: number, where: string): void {
  const wireType = key & 7;
  if (wireType !== expected) {
    throw new Error(`${where}: field ${key >>> 3} has wire type ${wireType}, expected ${expected}`);
  }
}

function readPiece(reader: Reader, end: number, index: number): ModelPiece {
  const where = `pieces[${index}]`;
  const out: ModelPiece = { piece: '', score: 0, type: PieceType.NORMAL };
  let hasPiece = false;
  while (reader.pos < end) {
    const key = reader.uint32();
    switch (key >>> 3) {
      case 1:
        expectWireType(key, 2, where);
        out.piece = reader.string();
        hasPiece = true;
        break;
      case 2:
        expectWireType(key, 5, where);
        out.score = reader.float();
        break;
      case 3:
        expectWireType(key, 0, where);
        out.type = reader.int32();
        if (!(out.type in PieceType)) throw new Error(`${where}: unknown piece type ${out.type}`);
        break;
      default:
        reader.skipType(key & 7);
    }
  }
  if (!hasPiece || out.piece === '') throw new Error(`${where}: empty piece string`);
  return out;
}

function readTrainerSpec(reader: Reader, end: number): TrainerSpec {
  // Defaults from sentencepiece_model.proto.
  const out: TrainerSpec = {
    modelType: ModelType.UNIGRAM,
    vocabSize: 8000,
    byteFallback: false,
    treatWhitespaceAsSuffix: false,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
    unkSurface: ' \u2047 ',
  };
  while (reader.pos < end) {
    const key = reader.uint32();
    const field = key >>> 3;
    const where = 'trainer_spec';
    switch (field) {
      case 3:
        expectWireType(key, 0, where);
        out.modelType = reader.int32();
        break;
      case 4:
        expectWireType(key, 0, where);
        out.vocabSize = reader.int32();
        break;
      case 24:
        expectWireType(key, 0, where);
        out.treatWhitespaceAsSuffix = reader.bool();
        break;
      case 35:
        expectWireType(key, 0, where);
        out.byteFallback = reader.bool();
        break;
      case 40:
      case 41:
      case 42:
      case 43: {
        expectWireType(key, 0, where);
        const id = reader.int32();
        if (field === 40) out.unkId = id;
        else if (field === 41) out.bosId = id;
        else if (field === 42) out.eosId = id;
        else out.padId = id;
        break;
      }
      case 44:
        expectWireType(key, 2, where);
        out.unkSurface = reader.string();
        break;
      default:
        reader.skipType(key & 7);
    }
  }
  return out;
}

function readNormalizerSpec(reader: Reader, end: number, where: string): NormalizerSpec {
  const out: NormalizerSpec = {
    name: '',
    precompiledCharsmap: new Uint8Array(0),
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
  };
  while (reader.pos < end) {
    const key = reader.uint32();
    switch (key >>> 3) {
      case 1:
        expectWireType(key, 2, where);
        out.name = reader.string();
        break;
      case 2:
        expectWireType(key, 2, where);
        out.precompiledCharsmap = reader.bytes();
        break;
      case 3:
        expectWireType(key, 0, where);
        out.addDummyPrefix = reader.bool();
        break;
      case 4:
        expectWireType(key, 0, where);
        out.removeExtraWhitespaces = reader.bool();
        break;
      case 5:
        expectWireType(key, 0, where);
        out.escapeWhitespaces = reader.bool();
        break;
      default:
        reader.skipType(key & 7);
    }
  }
  return out;
}

/** Reads one length-delimited sub-message with `read`, checking that it stays within its length. */
function subMessage<T>(reader: Reader, where: string, read: (end: number) => T): T {
  const length = reader.uint32();
  const end = reader.pos + length;
  if (end > reader.len) throw new Error(`${where}: length ${length} runs past the end of the file`);
  const value = read(end);
  if (reader.pos !== end) throw new Error(`${where}: a field runs past the end of the message`);
  return value;
}

function decode(bytes: Uint8Array): SentencePieceModelProto {
  const reader = protobuf.Reader.create(bytes);
  const pieces: ModelPiece[] = [];
  let trainerSpec: TrainerSpec | null = null;
  let normalizerSpec: NormalizerSpec | null = null;
  let denormalizerSpec: NormalizerSpec | null = null;
  while (reader.pos < reader.len) {
    const key = reader.uint32();
    switch (key >>> 3) {
      case 1: {
        expectWireType(key, 2, 'ModelProto');
        const index = pieces.length;
        pieces.push(subMessage(reader, `pieces[${index}]`, (end) => readPiece(reader, end, index)));
        break;
      }
      case 2:
        expectWireType(key, 2, 'ModelProto');
        trainerSpec = subMessage(reader, 'trainer_spec', (end) => readTrainerSpec(reader, end));
        break;
      case 3:
        expectWireType(key, 2, 'ModelProto');
        normalizerSpec = subMessage(reader, 'normalizer_spec', (end) =>
          readNormalizerSpec(reader, end, 'normalizer_spec'),
        );
        break;
      case 5:
        expectWireType(key, 2, 'ModelProto');
        denormalizerSpec = subMessage(reader, 'denormalizer_spec', (end) =>
          readNormalizerSpec(reader, end, 'denormalizer_spec'),
        );
        break;
      default:
        reader.skipType(key & 7);
    }
  }
  if (pieces.length === 0) throw new Error('no pieces (is this a SentencePiece tokenizer.model?)');
  if (!trainerSpec) throw new Error('missing trainer_spec');
  if (!normalizerSpec) throw new Error('missing normalizer_spec');
  return { pieces, trainerSpec, normalizerSpec, denormalizerSpec };
}

/** Parses a serialized SentencePiece ModelProto (`tokenizer.model`). Throws a descriptive error if malformed. */
export function parseModelProto(bytes: Uint8Array): SentencePieceModelProto {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) {
    throw new Error('malformed SentencePiece model: file is empty');
  }
  try {
    return decode(bytes);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`malformed SentencePiece model: ${message}`);
  }
}
