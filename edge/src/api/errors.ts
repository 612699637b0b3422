/** Errors in OpenAI's shape: `{ error: { message, type, param, code } }` with the matching HTTP status. */

export type ErrorType = 'invalid_request_error' | 'authentication_error' | 'requests' | 'server_error' | 'timeout';

export interface ErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: string | null };
}

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (Retry-After on 429). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  toResponse(): Response {
    return Response.json(this.body(), { status: this.status, headers: this.headers });
  }
}

export const invalidRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, message, 'invalid_request_error', param, code);

export const notFound = (message: string, code: string | null = null) => new ApiError(404, message, 'invalid_request_error', null, code);

export const unauthorized = (message: string) => new ApiError(401, message, 'invalid_request_error', null, 'invalid_api_key');

/** Closes the connection: the unread rest of the body must not be taken for the next request on it. */
export const tooLarge = (limitBytes: number) =>
  new ApiError(413, `Request body is larger than the limit of ${limitBytes} bytes.`, 'invalid_request_error', null, 'request_too_large', { Connection: 'close' });

export const rateLimited = (message: string, retryAfterSeconds: number, code = 'rate_limit_exceeded') =>
  new ApiError(429, message, 'requests', null, code, { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterSeconds))) });

export const unavailable = (message: string, code: string | null = null) => new ApiError(503, message, 'server_error', null, code);

/** Full or shutting down: a 503 the client may retry after `retryAfterSeconds` (here or on another edge). */
export const overloaded = (message: string, retryAfterSeconds: number, headers: Record<string, string> = {}) =>
  new ApiError(503, message, 'server_error', null, 'server_overloaded', { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterSeconds))), ...headers });

export const timedOut = (ms: number) =>
  new ApiError(504, `The request did not finish within the server's limit of ${ms} ms.`, 'timeout', null, 'request_timeout');

export const internalError = () =>
  new ApiError(500, 'The server had an error while processing your request. The error has been logged.', 'server_error');
