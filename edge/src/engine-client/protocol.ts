/**
 * The engine tier's messages (docs/workers.md, "Engine tier"). JSON for everything but media features,
 * which travel as raw float32 (little-endian) bytes after the JSON in one frame, or in parts the engine
 * fetches when the request would pass the server's max_payload. Web APIs only (TextEncoder, DataView).
 *
 *  client -> generate (request, queue group)      GenerateRequest frame
 *  engine -> reply                                 GenerateReply: accepted | declined | error
 *  engine -> GenerateRequest.events (publish)      EngineEvent*, numbered: prompt_logprobs (in pieces), token, heartbeat, then done | error
 *  engine -> GenerateRequest.features.fetch        FetchRequest; the client replies with that part's bytes
 *  client -> replica cancel subject (publish)      CancelMessage: the whole request, or one choice (stop string)
 */
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import type { FinishReason, SamplingParams, TokenLogprob } from '../engine/types';
import type { OutputFormat } from '../grammar/output';
import type { MediaModality } from '../multimodal/features';

export const ENGINE_PROTOCOL_VERSION = '1';

export const ENGINE_HEADERS = {
  version: 'Unimoe-Engine',
} as const;

/** An OpenAI error as the engine found it; the edge answers with exactly this status and body. */
export interface EngineErrorBody {
  status: number;
  message: string;
  type: string;
  param: string | null;
  code: string | null;
  /** For 503s that may be retried (Retry-After). */
  retryAfterSeconds?: number;
}

export interface GenerateRequest {
  /** This generation's id: what cancel names. */
  id: string;
  /** The API request's ids (X-Request-Id), for the engine's logs. */
  requestIds?: readonly string[];
  /** Where the engine publishes this request's events. */
  events: string;
  promptIds: number[];
  params: SamplingParams;
  n: number;
  promptLogprobs?: number;
  responseFormat?: OutputFormat;
  /** Media to encode: runs in the prompt, and each item's encoder input shape (its floats are the frame's bytes, item after item). */
  media?: {
    runs: { index: number; tokens: number; modality: MediaModality }[];
    items: { modality: MediaModality; dims: number[]; tokens: number }[];
  };
  /** Set when the feature bytes did not fit the request: that many bytes, fetched in parts of `stride` from `fetch`. */
  features?: { bytes: number; stride: number; fetch: string };
}

export type GenerateReply =
  | { type: 'accepted'; engine: string; heartbeatMs: number }
  /** At capacity or stopping: the client asks again (another engine of the queue group may take it). */
  | { type: 'declined'; engine: string; reason: string }
  | { type: 'error'; error: EngineErrorBody };

export type EngineEvent = { seq: number } & (
  | { type: 'token'; choice: number; id: number; logprob?: TokenLogprob }
  /** The prompt's log probabilities from `offset` (of `total`): a long prompt's come in several events, each under max_payload. */
  | { type: 'prompt_logprobs'; offset: number; total: number; logprobs: (TokenLogprob | null)[] }
  | { type: 'heartbeat' }
  | { type: 'done'; promptTokens: number; choices: { finishReason: FinishReason; completionTokens: number }[] }
  | { type: 'error'; error: EngineErrorBody }
);

/** Distributes the event union over its members, so each literal can be built without its `seq`. */
export type EngineEventBody = EngineEvent extends infer E ? (E extends { seq: number } ? Omit<E, 'seq'> : never) : never;

export interface FetchRequest {
  part: number;
}

/** Without `choice`: abort the request; with it: end that choice (a stop string completed at the edge). */
export interface CancelMessage {
  id: string;
  choice?: number;
}

export interface DiscoverReply {
  engine: string;
  /** The bundle hash: with the manifest's name, the prefix of every subject of the bundle. */
  hash: string;
  manifest: Manifest;
}

/** A bundle file's bytes from `offset` (the tokenizer the manifest names); the reply frame's JSON holds its size. */
export interface FileRequest {
  path: string;
  offset: number;
}

export interface FileReply {
  size: number;
}

export type GrammarReply = { ok: true } | { ok: false; grammarError: string } | { ok: false; error: EngineErrorBody };

export interface EngineLoad {
  engine: string;
  running: number;
  waiting: number;
  generatedTokens: number;
  accepted: number;
  declined: number;
  /** Requests in flight on this engine (the service's count: encoding and queued included). */
  active: number;
  /** Taking new requests (not full, not stopping). */
  open: boolean;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

export function decodeJson<T>(data: Uint8Array, what: string): T {
  try {
    return JSON.parse(decoder.decode(data)) as T;
  } catch (err) {
    throw new Error(`${what}: not JSON (${(err as Error).message})`);
  }
}

/** [u32 LE length of the JSON][JSON][bytes]. */
export function encodeFrame(meta: unknown, bytes: Uint8Array = new Uint8Array(0)): Uint8Array {
  const json = encodeJson(meta);
  const out = new Uint8Array(4 + json.length + bytes.length);
  new DataView(out.buffer).setUint32(0, json.length, true);
  out.set(json, 4);
  out.set(bytes, 4 + json.length);
  return out;
}

export function decodeFrame<T>(data: Uint8Array, what: string): { meta: T; bytes: Uint8Array } {
  if (data.length < 4) throw new Error(`${what}: ${data.length} bytes is too short for a frame`);
  const length = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0, true);
  if (4 + length > data.length) throw new Error(`${what}: the frame says ${length} JSON bytes but holds ${data.length - 4}`);
  return { meta: decodeJson<T>(data.subarray(4, 4 + length), what), bytes: data.subarray(4 + length) };
}

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Items' float32 values back to back, little-endian (the feature bytes of a GenerateRequest). */
export function featureBytes(items: readonly { data: Float32Array }[]): Uint8Array {
  const total = items.reduce((s, i) => s + i.data.length, 0);
  const out = new Float32Array(total);
  let at = 0;
  for (const i of items) {
    out.set(i.data, at);
    at += i.data.length;
  }
  const bytes = new Uint8Array(out.buffer);
  if (!HOST_IS_LITTLE_ENDIAN) swap32(bytes);
  return bytes;
}

/** The inverse of featureBytes: one Float32Array per item of `counts` values. */
export function featureArrays(bytes: Uint8Array, counts: readonly number[]): Float32Array[] {
  const total = counts.reduce((a, b) => a + b, 0);
  if (bytes.length !== total * 4) throw new Error(`media features: ${bytes.length} bytes where the items' shapes need ${total * 4}`);
  const copy = bytes.slice();
  if (!HOST_IS_LITTLE_ENDIAN) swap32(copy);
  const all = new Float32Array(copy.buffer);
  let at = 0;
  return counts.map((n) => all.subarray(at, (at += n)));
}

function swap32(b: Uint8Array): void {
  for (let i = 0; i < b.length; i += 4) {
    [b[i], b[i + 1], b[i + 2], b[i + 3]] = [b[i + 3]!, b[i + 2]!, b[i + 1]!, b[i]!];
  }
}
