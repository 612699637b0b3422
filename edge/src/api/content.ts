/**
 * Message content: a string or an array of parts (`text`, `image_url`, `input_audio`, `video_url`).
 * `input_audio.modality` says which encoder hears the clip: `speech` (Whisper) or `audio` (BEATs: music,
 * environmental sound); without it, the one the model has (a model with both needs it said).
 * Media parts are checked for shape (data URL / base64) and size before the modality check, so a client
 * learns about a malformed part even when the modality would be refused anyway.
 */
import { ApiError, invalidRequest } from './errors';
import { describe, preview, type ChatMessage } from './request';

export type Modality = 'text' | 'image' | 'speech' | 'audio' | 'video';
const SOUND_MODALITIES = ['speech', 'audio'] as const;

export interface MediaInput {
  modality: Exclude<Modality, 'text'>;
  /** MIME type (image/png, video/mp4) or audio format (wav, mp3). */
  format: string;
  base64: string;
  /** A video given as its frames (`video_url.frames`): each frame's base64; `base64` is then empty. */
  frames?: string[];
  bytes: number;
  param: string;
  /** An `input_audio` part that did not say `modality`: `checkModalities` picks the model's sound encoder. */
  soundUnspecified?: boolean;
}

export interface PromptMessage {
  role: 'system' | 'user' | 'assistant';
  text: string;
  media: MediaInput[];
}

export interface ContentLimits {
  /** Largest decoded size of one media part, in bytes. */
  maxMediaBytes: number;
  /** Most media parts in the whole request. */
  maxMediaItems: number;
  /** Largest decoded size of all media parts of the request together, in bytes. */
  maxMediaTotalBytes: number;
}

const PART_TYPES = ['text', 'image_url', 'input_audio', 'video_url'];
const AUDIO_FORMATS = ['wav', 'mp3', 'flac', 'ogg'];
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const DATA_URL = /^data:([a-z]+)\/([a-z0-9.+-]+);base64,/i;

export function normalizeMessages(messages: ChatMessage[], limits: ContentLimits): PromptMessage[] {
  const totals = { items: 0, bytes: 0 };
  return messages.map((m, i) => {
    const role = m.role === 'developer' ? 'system' : m.role;
    const param = `messages[${i}].content`;
    if (m.content === null || m.content === undefined) {
      if (role === 'assistant') return { role, text: '', media: [] };
      throw invalidRequest(`Invalid type for '${param}': expected a string or an array of content parts, but got ${describe(m.content ?? null)} instead.`, param, 'invalid_type');
    }
    if (typeof m.content === 'string') return { role, text: m.content, media: [] };
    if (!Array.isArray(m.content)) {
      throw invalidRequest(`Invalid type for '${param}': expected a string or an array of content parts, but got ${describe(m.content)} instead.`, param, 'invalid_type');
    }
    const texts: string[] = [];
    const media: MediaInput[] = [];
    m.content.forEach((part: unknown, j) => {
      const p = parsePart(part, `${param}[${j}]`, limits);
      if (typeof p === 'string') texts.push(p);
      else media.push(countMedia(p, totals, limits));
    });
    if (role !== 'user' && media.length > 0) {
      throw invalidRequest(`Invalid value for '${media[0]!.param}': only user messages may contain ${media[0]!.modality} parts.`, media[0]!.param, 'invalid_value');
    }
    return { role, text: texts.join('\n'), media };
  });
}

/**
 * Refuses media of a modality the served model (or this server) cannot take, naming the modality.
 * An `input_audio` part without `modality` becomes the model's one sound modality (speech or audio).
 */
export function checkModalities(messages: PromptMessage[], model: string, accepted: readonly string[]): void {
  const sound = SOUND_MODALITIES.filter((s) => accepted.includes(s));
  for (const m of messages) {
    for (const item of m.media) {
      if (item.soundUnspecified && sound.length === 1) item.modality = sound[0]!;
      if (item.soundUnspecified && sound.length === 2) {
        throw invalidRequest(
          `Missing required parameter: '${item.param}.input_audio.modality': the model '${model}' hears both speech (Whisper) and audio (BEATs: music, environmental sound); say which one this clip is.`,
          `${item.param}.input_audio.modality`,
          'missing_required_parameter',
        );
      }
      if (!accepted.includes(item.modality)) {
        throw invalidRequest(
          `The model '${model}' does not accept ${item.modality} input on this server; it accepts: ${accepted.join(', ')}.`,
          item.param,
          'unsupported_modality',
        );
      }
    }
  }
}

/** Per-request caps, checked as parts are read so a request stops at the first part over them. */
function countMedia(item: MediaInput, totals: { items: number; bytes: number }, limits: ContentLimits): MediaInput {
  totals.items++;
  totals.bytes += item.bytes;
  if (totals.items > limits.maxMediaItems) {
    throw invalidRequest(`Too many media parts: this server accepts at most ${limits.maxMediaItems} images, audio clips and videos per request.`, item.param, 'too_many_media_items');
  }
  if (totals.bytes > limits.maxMediaTotalBytes) {
    throw new ApiError(413, `The media parts of this request hold more than ${limits.maxMediaTotalBytes} bytes together (the limit per request).`, 'invalid_request_error', item.param, 'media_too_large');
  }
  return item;
}

function parsePart(part: unknown, param: string, limits: ContentLimits): string | MediaInput {
  if (typeof part !== 'object' || part === null || Array.isArray(part)) {
    throw invalidRequest(`Invalid type for '${param}': expected a content part object, but got ${describe(part)} instead.`, param, 'invalid_type');
  }
  const p = part as Record<string, unknown>;
  switch (p.type) {
    case 'text':
      return requireString(p.text, `${param}.text`);
    case 'image_url': {
      const url = requireString(field(p.image_url, 'url', `${param}.image_url`), `${param}.image_url.url`);
      return parseDataUrl(url, 'image', `${param}.image_url.url`, limits);
    }
    case 'video_url': {
      const frames = field(p.video_url, 'frames', `${param}.video_url`);
      if (frames !== undefined) return parseFrames(frames, `${param}.video_url.frames`, param, limits);
      const url = requireString(field(p.video_url, 'url', `${param}.video_url`), `${param}.video_url.url`);
      return parseDataUrl(url, 'video', `${param}.video_url.url`, limits);
    }
    case 'input_audio': {
      const data = requireString(field(p.input_audio, 'data', `${param}.input_audio`), `${param}.input_audio.data`);
      const format = requireString(field(p.input_audio, 'format', `${param}.input_audio`), `${param}.input_audio.format`);
      if (!AUDIO_FORMATS.includes(format)) {
        throw invalidRequest(`Invalid value for '${param}.input_audio.format': ${preview(format)} is not one of ${AUDIO_FORMATS.map((f) => `'${f}'`).join(', ')}.`, `${param}.input_audio.format`, 'invalid_value');
      }
      const modality = (p.input_audio as Record<string, unknown>).modality;
      if (modality !== undefined && !SOUND_MODALITIES.includes(modality as never)) {
        throw invalidRequest(`Invalid value for '${param}.input_audio.modality': ${preview(modality)} is not one of 'speech', 'audio'.`, `${param}.input_audio.modality`, 'invalid_value');
      }
      const bytes = checkBase64(data, `${param}.input_audio.data`, limits);
      return { modality: (modality as 'speech' | 'audio' | undefined) ?? 'audio', format, base64: data, bytes, param, ...(modality === undefined ? { soundUnspecified: true } : {}) };
    }
    default:
      throw invalidRequest(`Invalid value for '${param}.type': ${preview(p.type)} is not one of ${PART_TYPES.map((t) => `'${t}'`).join(', ')}.`, `${param}.type`, 'invalid_value');
  }
}

function parseDataUrl(url: string, modality: 'image' | 'video', param: string, limits: ContentLimits): MediaInput {
  const m = DATA_URL.exec(url);
  if (!m) {
    const what = /^https?:/i.test(url)
      ? 'remote URLs are not fetched by this server (fetching client-chosen URLs from the server would let requests reach internal hosts); send the file inline'
      : 'it is not a data URL';
    throw invalidRequest(`Invalid value for '${param}': expected a base64 data URL like data:${modality}/${modality === 'image' ? 'png' : 'mp4'};base64,..., but ${what}.`, param, 'invalid_value');
  }
  if (m[1]!.toLowerCase() !== modality) {
    throw invalidRequest(`Invalid value for '${param}': the data URL has MIME type ${m[1]}/${m[2]}, expected ${modality}/*.`, param, 'invalid_value');
  }
  const data = url.slice(m[0].length);
  return { modality, format: `${m[1]}/${m[2]}`.toLowerCase(), base64: data, bytes: checkBase64(data, param, limits), param: param.replace(/\.(image|video)_url\.url$/, '') };
}

/** `video_url.frames`: a video as its frames in order, each an image data URL; the limit applies to their sum. */
function parseFrames(frames: unknown, param: string, partParam: string, limits: ContentLimits): MediaInput {
  if (!Array.isArray(frames) || frames.length === 0) {
    throw invalidRequest(`Invalid type for '${param}': expected a non-empty array of image data URLs, but got ${describe(frames)} instead.`, param, 'invalid_type');
  }
  const parsed = frames.map((f, i) => parseDataUrl(requireString(f, `${param}[${i}]`), 'image', `${param}[${i}]`, limits));
  const bytes = parsed.reduce((sum, f) => sum + f.bytes, 0);
  if (bytes > limits.maxMediaBytes) {
    throw new ApiError(413, `'${param}' holds ${bytes} bytes of frames, more than the limit of ${limits.maxMediaBytes} bytes per media item.`, 'invalid_request_error', param, 'media_too_large');
  }
  return { modality: 'video', format: 'frames', base64: '', frames: parsed.map((f) => f.base64), bytes, param: partParam };
}

/** Checks base64 shape and the decoded size without decoding; returns the decoded byte count. */
function checkBase64(data: string, param: string, limits: ContentLimits): number {
  if (data.length === 0 || data.length % 4 !== 0 || !BASE64.test(data)) {
    throw invalidRequest(`Invalid value for '${param}': the data is not valid base64 (standard alphabet, padded to a multiple of 4 characters).`, param, 'invalid_base64');
  }
  const bytes = (data.length / 4) * 3 - (data.endsWith('==') ? 2 : data.endsWith('=') ? 1 : 0);
  if (bytes > limits.maxMediaBytes) {
    throw new ApiError(413, `'${param}' holds ${bytes} bytes, more than the limit of ${limits.maxMediaBytes} bytes per media item.`, 'invalid_request_error', param, 'media_too_large');
  }
  return bytes;
}

/** The part's bytes, or a frame list's frames (their base64 was checked by normalizeMessages). */
export function decodeMediaItem(item: Pick<MediaInput, 'base64' | 'frames'>): Uint8Array | Uint8Array[] {
  return item.frames ? item.frames.map((base64) => decodeMedia({ base64 })) : decodeMedia(item);
}

/** The part's bytes (its base64 was checked by normalizeMessages). atob keeps this runnable on Workers too. */
export function decodeMedia(item: Pick<MediaInput, 'base64'>): Uint8Array {
  const binary = atob(item.base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function field(obj: unknown, key: string, param: string): unknown {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    if (obj === undefined) throw invalidRequest(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter');
    throw invalidRequest(`Invalid type for '${param}': expected an object, but got ${describe(obj)} instead.`, param, 'invalid_type');
  }
  return (obj as Record<string, unknown>)[key];
}

function requireString(value: unknown, param: string): string {
  if (value === undefined) throw invalidRequest(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter');
  if (typeof value !== 'string') throw invalidRequest(`Invalid type for '${param}': expected a string, but got ${describe(value)} instead.`, param, 'invalid_type');
  return value;
}
