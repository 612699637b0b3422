/**
 * A request's media from bytes to prompt embeddings: preprocess every item (concurrently), lay the
 * prompt out with each item's token count, encode the modalities present, splice. Callers (the API)
 * place the media in the text first (./placement) and tokenise the prompt; the encoders are injected
 * (`LocalEncoderBackend` in embedded mode, a NATS one in split mode). An edge in front of the engine
 * tier has none: it prepares and lays out, the engine encodes (`runs`).
 */
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import type { EncodedPrompt } from '@unimoe/shared/tokenizer/template';
import type { EncoderBackend } from '../engine/encoder-backend';
import type { PromptEmbedding } from '../engine/types';
import { MediaError } from '../preprocess/errors';
import type { MediaLimits } from '../preprocess/limits';
import { encodeMedia, encoderShapes, type EncoderShapes } from './encode';
import { fromMediaError } from './errors';
import { checkPreprocessing, prepareFeatures, servableModalities, type MediaFeatures, type MediaModality } from './features';
import { layoutPrompt, withEmbeddings, type PromptLayout } from './splice';

export interface MediaItem {
  modality: MediaModality;
  /** The encoded file (PNG, WAV, MP4, ...), or a video's encoded frames in order; formats are recognised from the content. */
  bytes: Uint8Array | readonly Uint8Array[];
  /** Request field of the item; names it in errors. */
  param: string;
}

export interface PreparedMedia extends MediaFeatures {
  /** Prompt positions the item takes. */
  tokens: number;
}

export interface MultimodalPrompt extends PromptLayout {
  embeddings: PromptEmbedding[];
}

export class MultimodalPipeline {
  /** Modalities this pipeline can serve for the bundle. */
  readonly modalities: MediaModality[];
  private readonly shapes: EncoderShapes;

  constructor(
    private readonly manifest: Manifest,
    /** Absent where the engine tier encodes (then `embed`/`runs` are the engine's to call). */
    private readonly encoders: EncoderBackend | undefined,
    private readonly limits?: Partial<MediaLimits>,
  ) {
    checkPreprocessing(manifest.preprocessing, manifest.name);
    this.modalities = servableModalities(manifest);
    this.shapes = encoderShapes(manifest.preprocessing ?? {}, manifest.modalityTokens ?? {}, manifest.config.hidden);
  }

  /** Decodes and preprocesses every item; bad media fails with a MediaInputError for the first bad item. */
  async prepare(items: readonly MediaItem[]): Promise<PreparedMedia[]> {
    const pre = this.manifest.preprocessing ?? {};
    // allSettled: every decode (ffmpeg runs included) has ended before the request answers.
    const results = await Promise.allSettled(items.map((item) => prepareFeatures(item.modality, item.bytes, item.param, pre, this.limits)));
    return results.map((r, i) => {
      if (r.status === 'rejected') throw r.reason instanceof MediaError ? fromMediaError(r.reason, items[i]!.param) : r.reason;
      return { ...r.value, tokens: this.tokensOf(r.value) };
    });
  }

  /** Text ids with placeholder runs for `media` (which fills `prompt.placeholders` in order); nothing encoded yet. */
  layout(prompt: EncodedPrompt, media: readonly PreparedMedia[]): PromptLayout {
    return layoutPrompt(prompt, media, this.manifest.tokenizer.pad);
  }

  /** Runs the encoders and returns the layout with its embeddings, ready for `GenerationRequest`. */
  async embed(layout: PromptLayout, media: readonly PreparedMedia[]): Promise<MultimodalPrompt> {
    return { ...layout, embeddings: await this.runs(layout.runs, media) };
  }

  /** Runs the encoders for a layout's runs (one per item, in order): the prompt's embeddings. */
  async runs(runs: PromptLayout['runs'], media: readonly PreparedMedia[]): Promise<PromptEmbedding[]> {
    if (!this.encoders) throw new Error('this pipeline has no encoders: the engine tier encodes the media');
    const blocks = await encodeMedia(this.encoders, this.shapes, media);
    return withEmbeddings({ runs }, blocks);
  }

  private tokensOf(f: MediaFeatures): number {
    const per = this.shapes.tokens[f.modality];
    if (!per) throw new Error(`the bundle lists no token count for ${f.modality} (manifest modalityTokens)`);
    // A speech or audio item is one block per 30 s chunk; an image or a video is one block.
    return f.modality === 'speech' || f.modality === 'audio' ? per * f.dims[0]! : per;
  }
}
