/**
 * The engine's view of a multimodal prompt: text ids with a run of placeholder ids where each media
 * item's tokens go, and the runs' positions for `GenerationRequest.embeddings`.
 */
import type { EncodedPrompt } from '@unimoe/shared/tokenizer/template';
import type { PromptEmbedding } from '../engine/types';
import type { MediaModality } from './features';
import { placeholderOf } from './placement';

export type PromptModality = 'text' | MediaModality;

export interface PromptLayout {
  /** Text ids with `placeholderId` repeated over each media item's positions. */
  promptIds: number[];
  /** One run per media item, in placeholder order. */
  runs: { index: number; tokens: number; modality: MediaModality }[];
  /** Prompt positions per modality (they sum to promptIds.length). */
  tokens: Record<PromptModality, number>;
}

/** `items[i]` fills `prompt.placeholders[i]`; their modalities must agree (a caller bug otherwise). */
export function layoutPrompt(prompt: EncodedPrompt, items: readonly { modality: MediaModality; tokens: number }[], placeholderId: number): PromptLayout {
  if (items.length !== prompt.placeholders.length) {
    throw new Error(`prompt has ${prompt.placeholders.length} media placeholders but ${items.length} media items were given`);
  }
  const tokens: Record<PromptModality, number> = { text: prompt.ids.length, image: 0, video: 0, speech: 0, audio: 0 };
  const promptIds: number[] = [];
  const runs: PromptLayout['runs'] = [];
  let from = 0;
  prompt.placeholders.forEach((p, i) => {
    const item = items[i]!;
    if (placeholderOf(item.modality) !== p.modality) throw new Error(`media item ${i} is ${item.modality}, but placeholder ${i} is <${p.modality}>`);
    for (; from < p.index; from++) promptIds.push(prompt.ids[from]!);
    runs.push({ index: promptIds.length, tokens: item.tokens, modality: item.modality });
    for (let t = 0; t < item.tokens; t++) promptIds.push(placeholderId);
    tokens[item.modality] += item.tokens;
  });
  for (; from < prompt.ids.length; from++) promptIds.push(prompt.ids[from]!);
  return { promptIds, runs, tokens };
}

/** The layout's runs with their encoder outputs ([tokens, hidden] each, in run order). */
export function withEmbeddings(layout: Pick<PromptLayout, 'runs'>, embeddings: readonly Float32Array[]): PromptEmbedding[] {
  return layout.runs.map((r, i) => ({ ...r, data: embeddings[i]! }));
}
