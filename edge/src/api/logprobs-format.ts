/** Log probabilities in OpenAI's two response shapes: chat's `logprobs.content` and completions' parallel arrays. */
import type { TokenLogprob } from '../engine/types';
import type { ChatTokenizer } from './chat-tokenizer';

const utf8 = new TextEncoder();

/** Chat: `{ content: [{ token, logprob, bytes, top_logprobs: [...] }], refusal: null }`. */
export function chatLogprobs(tokenizer: ChatTokenizer, logprobs: readonly TokenLogprob[]) {
  const entry = (id: number, logprob: number) => {
    const token = tokenizer.tokenText(id);
    return { token, logprob, bytes: Array.from(utf8.encode(token)) };
  };
  return { content: logprobs.map((lp) => ({ ...entry(lp.id, lp.logprob), top_logprobs: lp.top.map((t) => entry(t.id, t.logprob)) })), refusal: null };
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

/**
 * Completions: parallel arrays over tokens. An entry without a log probability (the first prompt token
 * under echo) has null there. `offset`: where the first token's text starts in the choice's text.
 */
export function completionLogprobs(tokenizer: ChatTokenizer, entries: readonly { id: number; logprob: TokenLogprob | null }[], offset: number): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const { id, logprob } of entries) {
    const token = tokenizer.tokenText(id);
    out.tokens.push(token);
    out.token_logprobs.push(logprob ? logprob.logprob : null);
    out.text_offset.push(offset);
    offset += token.length;
    if (!logprob) {
      out.top_logprobs.push(null);
      continue;
    }
    // Two ids with the same text share a key; the more likely one (listed first) is kept.
    const top: Record<string, number> = {};
    for (const t of logprob.top) {
      const text = tokenizer.tokenText(t.id);
      if (!(text in top)) top[text] = t.logprob;
    }
    out.top_logprobs.push(top);
  }
  return out;
}
