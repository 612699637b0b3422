/**
 * A Worker's work that must outlive the client: when the client disconnects, workerd may end the request's
 * context at once, before the engine has been told to cancel or the usage row is written. Work started
 * while serving a request registers here and the request's `waitUntil` keeps the context alive until it
 * settles. (AsyncLocalStorage, from `nodejs_compat`, finds the request from anywhere in its call chain.)
 */
import { AsyncLocalStorage } from 'node:async_hooks';

interface WaitUntil {
  waitUntil(promise: Promise<unknown>): void;
}

const current = new AsyncLocalStorage<WaitUntil>();

export function runInRequest<T>(ctx: WaitUntil, fn: () => T): T {
  return current.run(ctx, fn);
}

/** Returns `work`, which the current request (if any) now waits for before its context ends. */
export function keepAlive<T>(work: Promise<T>): Promise<T> {
  current.getStore()?.waitUntil(work.catch(() => undefined));
  return work;
}
