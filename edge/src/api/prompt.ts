/**
 * The bundle's tokenizer and chat template as the API uses them. OpenAI-style conversations are looser
 * than vicuna_v1 (several system messages, consecutive user turns), so they are first folded into the
 * template's shape: system messages (all leading) joined into one, consecutive same-role turns joined.
 */
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { buildPrompt, encodePrompt, type ChatMessage, type TextTokenizer } from '@unimoe/shared/tokenizer/index';
import type { ChatTokenizer } from './chat-tokenizer';
import type { PromptMessage } from './content';
import { invalidRequest } from './errors';

export function createChatTokenizer(tokenizer: TextTokenizer, manifest: Pick<Manifest, 'template' | 'tokenizer'>): ChatTokenizer {
  if (manifest.template !== 'vicuna_v1') throw new Error(`manifest.json: unknown chat template '${String(manifest.template)}'`);
  // The bundle's BOS/EOS (config.json's), whichever tokenizer kind.
  const { bos, eos } = manifest.tokenizer;
  const encoder = { encode: (text: string) => tokenizer.encode(text), bos, eos };
  return {
    encodeChat: (messages) => encodePrompt(encoder, buildPrompt(toTemplateTurns(messages))).ids,
    encodeChatWithPlaceholders: (messages) => encodePrompt(encoder, buildPrompt(toTemplateTurns(messages))),
    encodeText: (text) => [bos, ...tokenizer.encode(text)],
    decode: (ids) => tokenizer.decode(ids),
    tokenText: (id) => tokenizer.tokenText(id),
    streamDecoder: () => tokenizer.streamDecoder(),
  };
}

/** Folds request messages into vicuna_v1 turns; refuses orders the template cannot express (400). */
export function toTemplateTurns(messages: readonly PromptMessage[]): ChatMessage[] {
  const turns: ChatMessage[] = [];
  let seenTurn = false;
  messages.forEach((m, i) => {
    if (m.role === 'system') {
      if (seenTurn) {
        throw invalidRequest(
          `Invalid value for 'messages[${i}].role': system messages must come before the first user message (the vicuna_v1 template has one system prompt).`,
          `messages[${i}].role`,
          'invalid_value',
        );
      }
    } else if (!seenTurn && m.role !== 'user') {
      throw invalidRequest(`Invalid value for 'messages[${i}].role': the conversation must start with a user message.`, `messages[${i}].role`, 'invalid_value');
    } else {
      seenTurn = true;
    }
    const last = turns[turns.length - 1];
    if (last && last.role === m.role) last.content = `${last.content}\n${m.text}`;
    else turns.push({ role: m.role, content: m.text });
  });
  const final = messages.length - 1;
  if (messages[final]?.role !== 'user') {
    throw invalidRequest(`Invalid value for 'messages[${final}].role': the last message must come from the user.`, `messages[${final}].role`, 'invalid_value');
  }
  return turns;
}
