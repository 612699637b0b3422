/**
 * Structured JSON logs (pino) for the edge, the workers and the CLI's long-running commands, one object
 * per line on stdout. Request ids travel in an AsyncLocalStorage context: every line logged while serving
 * a request carries `requestIds`, and the NATS messages sent for it carry them in the `Unimoe-Trace`
 * header to the workers, which log them too. Level: LOG_LEVEL (trace, debug, info, warn, error, silent; default info).
 *
 * On Cloudflare Workers the bundler picks pino's browser build (its package.json `browser` field), which has
 * no destinations and no mixin: there `browser.write` prints the same JSON lines through console.log, the
 * Workers log sink, and adds the request ids itself.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { destination, pino, stdTimeFunctions, type Logger } from 'pino';

/** NATS header with the request ids a message works for, comma-separated. */
export const TRACE_HEADER = 'Unimoe-Trace';
/** Ids listed in one header at most: an engine step can batch many requests; the rest are counted. */
const MAX_TRACE_IDS = 16;

const context = new AsyncLocalStorage<{ requestIds: readonly string[] }>();

const requestIdsField = () => {
  const ids = context.getStore()?.requestIds;
  return ids && ids.length > 0 ? { requestIds: ids } : {};
};

/** pino's browser build (Workers) exports no `destination`; Node's writes synchronously to stdout. */
const onNode = typeof destination === 'function';

export const log: Logger = pino(
  {
    level: process.env.LOG_LEVEL || 'info',
    base: { pid: process.pid },
    timestamp: stdTimeFunctions.isoTime,
    mixin: requestIdsField,
    browser: { write: (entry) => console.log(JSON.stringify({ ...entry, ...requestIdsField() }, withErrors)) },
  },
  ...(onNode ? [destination({ dest: 1, sync: true })] : []),
);

/** JSON.stringify drops an Error's own fields; pino's Node build serialises them as these. */
function withErrors(_key: string, value: unknown): unknown {
  return value instanceof Error ? { type: value.name, message: value.message, stack: value.stack } : value;
}

/** Runs `fn` (and everything it starts) on behalf of these requests. */
export function withRequestIds<T>(requestIds: readonly string[], fn: () => T): T {
  return context.run({ requestIds }, fn);
}

export function currentRequestIds(): readonly string[] {
  return context.getStore()?.requestIds ?? [];
}

/** The `Unimoe-Trace` header value for the current requests, or undefined outside any. */
export function traceHeaderValue(): string | undefined {
  const ids = currentRequestIds();
  if (ids.length === 0) return undefined;
  const shown = ids.slice(0, MAX_TRACE_IDS).join(',');
  return ids.length > MAX_TRACE_IDS ? `${shown},+${ids.length - MAX_TRACE_IDS}` : shown;
}

/** Request ids from a received `Unimoe-Trace` header (never trusted beyond being short printable tokens). */
export function parseTraceHeader(value: string | undefined): string[] {
  if (!value) return [];
  return value.split(',').filter((id) => isRequestId(id)).slice(0, MAX_TRACE_IDS + 1);
}

/** What the edge accepts from a client's X-Request-Id: 1-128 printable ASCII characters, no comma or space. */
export function isRequestId(id: string): boolean {
  return /^[\x21-\x2b\x2d-\x7e]{1,128}$/.test(id);
}
