/**
 * The Store on Cloudflare D1 (the Worker's database binding), through drizzle's D1 driver. The tables
 * are the SQLite ones; `wrangler d1 migrations apply` applies edge/drizzle/sqlite before the Worker runs
 * (a Worker does not migrate at request time: D1 has no lock to serialise concurrent isolates).
 */
import { drizzle } from 'drizzle-orm/d1';
import { createSqliteStore } from './sqlite-db-store';
import type { Store } from './store';

/** The part of the D1Database binding drizzle needs (typed here so edge/ does not depend on workers-types). */
export type D1Binding = Parameters<typeof drizzle>[0];

export function openD1Store(binding: D1Binding): Store {
  // The binding lives as long as the isolate: nothing to close.
  return createSqliteStore(drizzle(binding), async () => {});
}
