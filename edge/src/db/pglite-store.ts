/** The Store on PGlite (in-process PostgreSQL): exercises the PostgreSQL schema and migrations without a server. */
import type { PGlite } from '@electric-sql/pglite';
import { drizzle } from 'drizzle-orm/pglite';
import { migrate } from 'drizzle-orm/pglite/migrator';
import { createPgStore, PG_MIGRATIONS } from './pg-store';
import type { Store } from './store';

export async function openPgliteStore(client: PGlite): Promise<Store> {
  const db = drizzle(client);
  await migrate(db, { migrationsFolder: PG_MIGRATIONS });
  return createPgStore(db, () => client.close());
}
