/**
 * A request's media or placeholders that cannot be served: carries the HTTP status, the request field
 * (`messages[0].content[1]`) and a machine-readable code, so the API answers in OpenAI's error shape
 * without parsing messages.
 */
import type { MediaError, MediaErrorKind } from '../preprocess/errors';

export class MediaInputError extends Error {
  override name = 'MediaInputError';
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null,
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const CODES: Record<MediaErrorKind, string> = {
  too_large: 'media_too_large',
  unsupported: 'unsupported_media',
  corrupt: 'invalid_media',
  empty: 'empty_media',
};

/** A preprocessing failure of the media item at `param` (its message already names the item). */
export function fromMediaError(err: MediaError, param: string): MediaInputError {
  return new MediaInputError(err.status, err.message, param, CODES[err.kind], { cause: err });
}

