/**
 * The one error type preprocessing throws for bad input. `kind` lets the API pick the HTTP status
 * without parsing messages; messages name the media and the problem.
 */
export type MediaErrorKind =
  | 'too_large' // encoded size or declared pixel count / duration over a limit
  | 'unsupported' // format or codec this server cannot decode (includes "ffmpeg not installed")
  | 'corrupt' // malformed or truncated data
  | 'empty'; // no pixels / no samples / no frames

const HTTP_STATUS: Record<MediaErrorKind, number> = {
  too_large: 413,
  unsupported: 415,
  corrupt: 400,
  empty: 400,
};

export class MediaError extends Error {
  readonly kind: MediaErrorKind;
  /** The HTTP status an API should answer with. */
  readonly status: number;

  constructor(kind: MediaErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MediaError';
    this.kind = kind;
    this.status = HTTP_STATUS[kind];
  }
}

/** Runs a decoder and turns anything it throws (other than a MediaError) into a `corrupt` MediaError. */
export async function asCorrupt<T>(what: string, decode: () => T | Promise<T>): Promise<T> {
  try {
    return await decode();
  } catch (err) {
    if (err instanceof MediaError) throw err;
    const reason = err instanceof Error ? err.message : String(err);
    throw new MediaError('corrupt', `${what}: cannot decode (${reason})`, { cause: err });
  }
}
