import { describe, expect, it } from 'vitest';
import { loadSentencePiece } from './sentencepiece';
import { buildPrompt, encodePrompt, renderVicunaV1, VICUNA_V1_SYSTEM, type ChatMessage } from './template';
import { fixtures, readModel } from './test-fixtures';

const tokenizer = loadSentencePiece(readModel(fixtures.llama));

describe('vicuna_v1 template against the Python reference (FastChat rendering + sentencepiece chunks)', () => {
  it.each(fixtures.chat.map((c, i) => [i, c] as const))('conversation %i', (_i, chat) => {
    expect(renderVicunaV1(chat.messages)).toBe(chat.prompt);
    const encoded = encodePrompt(tokenizer, buildPrompt(chat.messages));
    expect(encoded.ids).toEqual(chat.ids);
    expect(encoded.placeholders).toEqual(chat.placeholders);
  });
});

describe('buildPrompt', () => {
  it('uses the default system prompt and ends where the assistant speaks', () => {
    expect(buildPrompt([{ role: 'user', content: '<image>\nWhat is this?' }])).toEqual([
      { type: 'text', text: `${VICUNA_V1_SYSTEM} USER: ` },
      { type: 'placeholder', modality: 'image' },
      { type: 'text', text: '\nWhat is this? ASSISTANT:' },
    ]);
  });

  it('ends assistant turns with EOS and lets a system message replace the default prompt', () => {
    const messages: ChatMessage[] = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi <audio>' },
      { role: 'assistant', content: 'Hello.' },
      { role: 'user', content: '<video> and?' },
    ];
    expect(buildPrompt(messages)).toEqual([
      { type: 'text', text: 'Be brief. USER: Hi ' },
      { type: 'placeholder', modality: 'audio' },
      { type: 'text', text: ' ASSISTANT: Hello.' },
      { type: 'eos' },
      { type: 'text', text: 'USER: ' },
      { type: 'placeholder', modality: 'video' },
      { type: 'text', text: ' and? ASSISTANT:' },
    ]);
  });

  it.each([
    ['no messages', [], /no user message/],
    ['only a system message', [{ role: 'system', content: 's' }], /no user message/],
    ['an assistant turn first', [{ role: 'assistant', content: 'a' }], /messages\[0\] has role 'assistant', expected 'user'/],
    [
      'two user turns in a row',
      [
        { role: 'user', content: 'a' },
        { role: 'user', content: 'b' },
      ],
      /messages\[1\] has role 'user', expected 'assistant'/,
    ],
    [
      'a system message after the start',
      [
        { role: 'user', content: 'a' },
        { role: 'system', content: 'b' },
      ],
      /messages\[1\] has role 'system'/,
    ],
    [
      'a conversation ending with the assistant',
      [
        { role: 'user', content: 'a' },
        { role: 'assistant', content: 'b' },
      ],
      /the last message must be from the user/,
    ],
  ] as [string, ChatMessage[], RegExp][])('rejects %s', (_name, messages, error) => {
    expect(() => buildPrompt(messages)).toThrow(error);
  });
});

describe('encodePrompt', () => {
  it('puts BOS first, encodes each text part with its own dummy prefix, and emits no id for placeholders', () => {
    const encoded = encodePrompt(tokenizer, [
      { type: 'text', text: 'a' },
      { type: 'placeholder', modality: 'image' },
      { type: 'text', text: 'b' },
      { type: 'eos' },
    ]);
    expect(encoded.ids).toEqual([tokenizer.bos, ...tokenizer.encode('a'), ...tokenizer.encode('b'), tokenizer.eos]);
    expect(encoded.placeholders).toEqual([{ modality: 'image', index: 1 + tokenizer.encode('a').length }]);
    expect(tokenizer.idToPiece(encoded.ids[encoded.placeholders[0]!.index]!)).toMatch(/^\u2581/);
  });
});
