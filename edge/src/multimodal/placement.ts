/**
 * Prompt assembly: where each media item of a request goes in the prompt text. Per message:
 *
 *  1. Placeholders written in the text (`<image>`, `<video>`, `<audio>`) take that message's media
 *     parts of the same kind in part order: the first `<image>` the first image part, and so on.
 *     Uni-MoE has one placeholder for sound: `<audio>` takes the next speech or audio part (Whisper or
 *     BEATs), in part order. More placeholders than parts is an error (400) naming the message.
 *  2. Parts left over (all of them when the text has no placeholder) go where Uni-MoE's reference
 *     template puts them, `USER: <image>\n<audio>\n{query}`: before the text, images first, then
 *     videos, then sound parts in part order, each placeholder followed by a newline.
 *
 * The result is the conversation with every placeholder written out, plus the media in the order their
 * placeholders appear, which is the order the template renders them in.
 */
import { MediaInputError } from './errors';
import type { MediaModality } from './features';

export interface PlaceableMedia {
  modality: MediaModality;
  /** Request field of the part, e.g. `messages[0].content[1]`. */
  param: string;
}

export interface MediaTurn<M extends PlaceableMedia> {
  role: 'system' | 'user' | 'assistant';
  text: string;
  media: M[];
}

type Placeholder = 'image' | 'video' | 'audio';
/** The reference template's order for placeholders it writes itself. */
const TEMPLATE_ORDER: readonly Placeholder[] = ['image', 'video', 'audio'];
const PLACEHOLDER = /<(image|video|audio)>/g;

/** The prompt placeholder a part of `modality` fills: speech and audio both use Uni-MoE's `<audio>`. */
export function placeholderOf(modality: MediaModality): Placeholder {
  return modality === 'speech' ? 'audio' : modality;
}

const PART_NAME: Record<Placeholder, string> = { image: 'image', video: 'video', audio: 'speech/audio' };

export function placeMedia<M extends PlaceableMedia>(messages: readonly MediaTurn<M>[]): { messages: MediaTurn<M>[]; order: M[] } {
  const order: M[] = [];
  const placed = messages.map((m, i) => {
    const written = [...m.text.matchAll(PLACEHOLDER)].map((x) => x[1] as Placeholder);
    const byModality = new Map<Placeholder, M[]>(TEMPLATE_ORDER.map((mod) => [mod, m.media.filter((x) => placeholderOf(x.modality) === mod)]));
    let prefix = '';
    const leading: M[] = [];
    for (const mod of TEMPLATE_ORDER) {
      const parts = byModality.get(mod)!;
      const wanted = written.filter((w) => w === mod).length;
      if (wanted > parts.length) {
        throw new MediaInputError(
          400,
          `Invalid value for 'messages[${i}].content': the text has ${wanted} <${mod}> placeholder${wanted === 1 ? '' : 's'} but the message has ` +
            `${parts.length} ${PART_NAME[mod]} part${parts.length === 1 ? '' : 's'}; each placeholder takes the next ${PART_NAME[mod]} part of the same message ` +
            `(parts without a placeholder go before the text).`,
          `messages[${i}].content`,
          'media_placeholder_mismatch',
        );
      }
      for (const part of parts.slice(wanted)) {
        prefix += `<${mod}>\n`;
        leading.push(part);
      }
    }
    order.push(...leading);
    const next = new Map<Placeholder, number>();
    for (const mod of written) {
      const k = next.get(mod) ?? 0;
      order.push(byModality.get(mod)![k]!);
      next.set(mod, k + 1);
    }
    return { ...m, text: prefix + m.text };
  });
  return { messages: placed, order };
}
