/** The Store on SQLite through libsql (a local file by default, or any libsql URL). */
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient } from '@libsql/client';
import { drizzle } from 'drizzle-orm/libsql';
import { migrate } from 'drizzle-orm/libsql/migrator';
import { createSqliteStore } from './sqlite-db-store';
import type { Store } from './store';

/** The SQLite migrations; the Worker's D1 database applies the same files (infra/workers/wrangler.toml). */
const MIGRATIONS = fileURLToPath(new URL('../../drizzle/sqlite', import.meta.url));

/** Opens (creating the file and its folder if needed) and migrates a SQLite database; url is `file:PATH`. */
export async function openSqliteStore(url: string): Promise<Store> {
  if (url.startsWith('file:') && url !== 'file::memory:') {
    await mkdir(dirname(url.slice('file:'.length)), { recursive: true });
  }
  const client = createClient({ url });
  const db = drizzle(client);
  await migrate(db, { migrationsFolder: MIGRATIONS });
  return createSqliteStore(db, async () => client.close());
}
