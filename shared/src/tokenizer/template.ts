// The `vicuna_v1` conversation template (FastChat Conversation with SeparatorStyle.TWO, as configured
// by LLaVA / Uni-MoE as `conv_vicuna_v1`) and prompt tokenization with modality placeholders.
import type { SentencePieceTokenizer } from './sentencepiece';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

export type Modality = 'image' | 'audio' | 'video';

export type PromptPart =
  | { type: 'text'; text: string }
  | { type: 'eos' }
  | { type: 'placeholder'; modality: Modality };

export interface EncodedPrompt {
  ids: number[];
  /** Where each modality's tokens go: `index` is the position in `ids` they are inserted before. */
  placeholders: { modality: Modality; index: number }[];
}

export const VICUNA_V1_SYSTEM =
  'A chat between a curious user and an artificial intelligence assistant. ' +
  "The assistant gives helpful, detailed, and polite answers to the user's questions.";

const ROLE_NAMES = { user: 'USER', assistant: 'ASSISTANT' } as const;
const SEP = ' ';
const SEP2 = '</s>';
/** Split points of the rendered prompt: the placeholders and the EOS special token. */
const SPECIAL = /(<image>|<audio>|<video>|<\/s>)/;

/**
 * Renders a conversation as FastChat's `get_prompt()` does for vicuna_v1, ready for generation:
 * `{system} USER: {u1} ASSISTANT: {a1}</s>USER: {u2} ASSISTANT:`. A leading system message replaces
 * the default system prompt; the rest must alternate user/assistant and end with a user turn. As in
 * FastChat, an empty turn renders as `ROLE:` with no separator.
 */
export function renderVicunaV1(messages: readonly ChatMessage[]): string {
  let system = VICUNA_V1_SYSTEM;
  let turns = messages;
  if (messages[0]?.role === 'system') {
    system = messages[0].content;
    turns = messages.slice(1);
  }
  if (turns.length === 0) throw new Error('chat template: the conversation has no user message');
  let prompt = system + SEP;
  turns.forEach((message, i) => {
    const expected = i % 2 === 0 ? 'user' : 'assistant';
    if (message.role !== expected) {
      const index = i + messages.length - turns.length;
      throw new Error(
        `chat template: messages[${index}] has role '${message.role}', expected '${expected}' ` +
          '(an optional system message first, then user and assistant turns alternating)',
      );
    }
    if (typeof message.content !== 'string') {
      throw new Error(`chat template: messages[${i + messages.length - turns.length}].content must be a string`);
    }
    const role = ROLE_NAMES[message.role];
    prompt += message.content ? `${role}: ${message.content}${i % 2 === 0 ? SEP : SEP2}` : `${role}:`;
  });
  if (turns.length % 2 === 0) throw new Error('chat template: the last message must be from the user');
  return prompt + `${ROLE_NAMES.assistant}:`;
}

/**
 * Splits a rendered prompt into parts: `</s>` becomes an EOS token and `<image>`, `<audio>`,
 * `<video>` become placeholders, in order. Like the reference (a HF LlamaTokenizer sees `</s>` as its
 * special token wherever it occurs), a literal `</s>` inside a message is an EOS too.
 */
export function splitPrompt(prompt: string): PromptPart[] {
  const parts: PromptPart[] = [];
  for (const chunk of prompt.split(SPECIAL)) {
    if (chunk === SEP2) parts.push({ type: 'eos' });
    else if (chunk === '<image>' || chunk === '<audio>' || chunk === '<video>') {
      parts.push({ type: 'placeholder', modality: chunk.slice(1, -1) as Modality });
    } else if (chunk !== '') parts.push({ type: 'text', text: chunk });
  }
  return parts;
}

/** The vicuna_v1 prompt for a conversation, as parts for `encodePrompt`. */
export function buildPrompt(messages: readonly ChatMessage[]): PromptPart[] {
  return splitPrompt(renderVicunaV1(messages));
}

/**
 * Prompt parts -> ids: BOS, then each text part encoded on its own (so each gets SentencePiece's
 * dummy-prefix space), EOS parts as the EOS id, and placeholders recorded without emitting an id.
 * This is the reference's chunking: LLaVA `llava/mm_utils.py` `tokenizer_image_token` (extended by
 * Uni-MoE to audio/video) tokenizes each chunk between placeholders separately and keeps only the
 * first chunk's BOS, and the slow HF LlamaTokenizer encodes the text on each side of `</s>` separately.
 */
export function encodePrompt(
  tokenizer: Pick<SentencePieceTokenizer, 'encode' | 'bos' | 'eos'>,
  parts: readonly PromptPart[],
): EncodedPrompt {
  const ids = [tokenizer.bos];
  const placeholders: EncodedPrompt['placeholders'] = [];
  for (const part of parts) {
    if (part.type === 'text') for (const id of tokenizer.encode(part.text)) ids.push(id);
    else if (part.type === 'eos') ids.push(tokenizer.eos);
    else placeholders.push({ modality: part.modality, index: ids.length });
  }
  return { ids, placeholders };
}
