import { describe, expect, it } from 'vitest';
import { MediaInputError } from './errors';
import type { MediaModality } from './features';
import { placeMedia } from './placement';
import { layoutPrompt } from './splice';

const part = (modality: MediaModality, n: number) => ({ modality, param: `messages[0].content[${n}]` });

describe('placeMedia', () => {
  it('puts parts without placeholders before the text in the template order: images, videos, audio', () => {
    const a = part('audio', 1);
    const i = part('image', 2);
    const v = part('video', 3);
    const { messages, order } = placeMedia([{ role: 'user', text: 'What is this?', media: [a, i, v] }]);
    expect(messages[0]!.text).toBe('<image>\n<video>\n<audio>\nWhat is this?');
    expect(order).toEqual([i, v, a]);
  });

  it('fills written placeholders with the first parts of their modality; the rest go before the text', () => {
    const [i1, i2, a1] = [part('image', 1), part('image', 2), part('audio', 3)];
    const { messages, order } = placeMedia([
      { role: 'system', text: 'Be brief.', media: [] },
      { role: 'user', text: 'Compare <audio> with <image>.', media: [i1, a1, i2] },
    ]);
    expect(messages.map((m) => m.text)).toEqual(['Be brief.', '<image>\nCompare <audio> with <image>.']);
    // Prefix first (the leftover second image), then the written placeholders in text order.
    expect(order).toEqual([i2, a1, i1]);
  });

  it('speech and audio parts share the <audio> placeholder, in part order', () => {
    const [s, i, a] = [part('speech', 1), part('image', 2), part('audio', 3)];
    const { messages, order } = placeMedia([{ role: 'user', text: 'Hear <audio>.', media: [s, i, a] }]);
    expect(messages[0]!.text).toBe('<image>\n<audio>\nHear <audio>.');
    expect(order).toEqual([i, a, s]);
    const mismatch = () => placeMedia([{ role: 'user', text: '<audio> <audio>', media: [part('speech', 1)] }]);
    expect(mismatch).toThrow(/the text has 2 <audio> placeholders but the message has 1 speech\/audio part;/);
  });

  it('keeps message order across turns', () => {
    const first = part('image', 0);
    const second = { modality: 'image' as const, param: 'messages[2].content[0]' };
    const { order } = placeMedia([
      { role: 'user', text: 'a', media: [first] },
      { role: 'assistant', text: 'b', media: [] },
      { role: 'user', text: 'c', media: [second] },
    ]);
    expect(order).toEqual([first, second]);
  });

  it('refuses more placeholders than parts, naming the message and the modality', () => {
    let err: unknown;
    try {
      placeMedia([
        { role: 'user', text: 'ok', media: [] },
        { role: 'user', text: '<video><video>', media: [part('video', 1)] },
      ]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MediaInputError);
    expect(err).toMatchObject({ status: 400, param: 'messages[1].content', code: 'media_placeholder_mismatch' });
    expect((err as Error).message).toMatch(/^Invalid value for 'messages\[1\]\.content': the text has 2 <video> placeholders but the message has 1 video part;/);
  });
});

describe('layoutPrompt', () => {
  it('inserts a run of placeholder ids per item at its index and counts tokens per modality', () => {
    const prompt = { ids: [1, 10, 11, 12, 13], placeholders: [{ modality: 'image' as const, index: 2 }, { modality: 'audio' as const, index: 3 }] };
    const layout = layoutPrompt(prompt, [{ modality: 'image', tokens: 3 }, { modality: 'audio', tokens: 2 }], 0);
    expect(layout.promptIds).toEqual([1, 10, 0, 0, 0, 11, 0, 0, 12, 13]);
    expect(layout.runs).toEqual([{ index: 2, tokens: 3, modality: 'image' }, { index: 6, tokens: 2, modality: 'audio' }]);
    expect(layout.tokens).toEqual({ text: 5, image: 3, speech: 0, audio: 2, video: 0 });
  });

  it('an <audio> placeholder takes a speech (Whisper) or an audio (BEATs) item; tokens are counted apart', () => {
    const prompt = { ids: [1, 10, 11, 12], placeholders: [{ modality: 'audio' as const, index: 1 }, { modality: 'audio' as const, index: 2 }] };
    const layout = layoutPrompt(prompt, [{ modality: 'speech', tokens: 2 }, { modality: 'audio', tokens: 3 }], 0);
    expect(layout.promptIds).toEqual([1, 0, 0, 10, 0, 0, 0, 11, 12]);
    expect(layout.tokens).toEqual({ text: 4, image: 0, video: 0, speech: 2, audio: 3 });
  });

  it('refuses items that do not match the placeholders', () => {
    const prompt = { ids: [1, 2], placeholders: [{ modality: 'image' as const, index: 1 }] };
    expect(() => layoutPrompt(prompt, [], 0)).toThrow(/prompt has 1 media placeholders but 0 media items/);
    expect(() => layoutPrompt(prompt, [{ modality: 'audio', tokens: 1 }], 0)).toThrow(/media item 0 is audio, but placeholder 0 is <image>/);
  });
});
