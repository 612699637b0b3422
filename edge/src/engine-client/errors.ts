/** Errors of the engine tier in the API's OpenAI shape (the edge answers with them as they are). */
import { ApiError, overloaded, unavailable, type ErrorType } from '../api/errors';
import type { EngineErrorBody } from './protocol';

/** Seconds a client is asked to wait when no engine is free. */
export const RETRY_AFTER_SECONDS = 1;

export function errorFromEngine(e: EngineErrorBody): ApiError {
  const headers: Record<string, string> = e.retryAfterSeconds !== undefined ? { 'Retry-After': String(Math.max(1, Math.ceil(e.retryAfterSeconds))) } : {};
  return new ApiError(e.status, e.message, e.type as ErrorType, e.param, e.code, headers);
}

export function errorBody(err: ApiError): EngineErrorBody {
  const retry = err.headers['Retry-After'];
  return { status: err.status, message: err.message, type: err.type, param: err.param, code: err.code, ...(retry ? { retryAfterSeconds: Number(retry) } : {}) };
}

export const noFreeEngine = (model: string) =>
  overloaded(`The server is at capacity: no engine of the engine tier is free to take the request (every engine serving ${model} is busy, or none runs). Please retry shortly.`, RETRY_AFTER_SECONDS);

export const engineGone = (what: string) => unavailable(`The engine tier failed the request: ${what}. Please retry.`, 'engine_unavailable');
