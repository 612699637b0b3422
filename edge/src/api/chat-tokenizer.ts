/** What the API needs from the tokenizer and chat template (built from the bundle in prompt.ts). */
import type { EncodedPrompt } from '@unimoe/shared/tokenizer/template';
import type { PromptMessage } from './content';

export interface TextStreamDecoder {
  /** Text completed by this token (may be '' while a multi-byte character is still incomplete). */
  push(id: number): string;
  /** Whatever is left at the end of generation. */
  flush(): string;
}

export interface ChatTokenizer {
  /** The conversation rendered with the model's template and tokenised, ending where the assistant speaks. */
  encodeChat(messages: PromptMessage[]): number[];
  /** As encodeChat, plus where each `<image>`/`<audio>`/`<video>` placeholder of the texts goes in the ids. */
  encodeChatWithPlaceholders(messages: PromptMessage[]): EncodedPrompt;
  /** A plain text prompt (completions): BOS, then the text's ids. */
  encodeText(text: string): number[];
  decode(ids: readonly number[]): string;
  /** One token's own text, as logprobs show it. */
  tokenText(id: number): string;
  streamDecoder(): TextStreamDecoder;
}
