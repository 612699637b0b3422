/** The Store on PostgreSQL: postgres.js for `postgres://` URLs; any drizzle pg database (PGlite in tests). */
import { fileURLToPath } from 'node:url';
import { and, asc, eq, isNull } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle } from 'drizzle-orm/postgres-js';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { hashApiKey, newApiKey } from './api-key';
import { toKeyRecord, toUsageRow, toUsageValues } from './rows';
import { apiKeys, usage } from './schema-pg';
import type { Store } from './store';

export const PG_MIGRATIONS = fileURLToPath(new URL('../../drizzle/pg', import.meta.url));

/** Connects to PostgreSQL and applies pending migrations. */
export async function openPostgresStore(url: string): Promise<Store> {
  const client = postgres(url, { onnotice: () => {} });
  const db = drizzle(client);
  await migrate(db, { migrationsFolder: PG_MIGRATIONS });
  return createPgStore(db, () => client.end());
}

/** The Store over an already migrated drizzle PostgreSQL database. */
export function createPgStore<Q extends PgQueryResultHKT>(db: PgDatabase<Q>, close: () => Promise<void>): Store {
  return {
    async createKey(name) {
      const { key, prefix, hash } = await newApiKey();
      const [row] = await db.insert(apiKeys).values({ name, prefix, hash, createdAt: new Date() }).returning();
      return { key, record: toKeyRecord(row!) };
    },
    async listKeys() {
      return (await db.select().from(apiKeys).orderBy(asc(apiKeys.id))).map(toKeyRecord);
    },
    async revokeKey(id) {
      await db.update(apiKeys).set({ revokedAt: new Date() }).where(and(eq(apiKeys.id, id), isNull(apiKeys.revokedAt)));
      const [row] = await db.select().from(apiKeys).where(eq(apiKeys.id, id));
      return row ? toKeyRecord(row) : null;
    },
    async findActiveKey(key) {
      const hash = await hashApiKey(key);
      const [row] = await db.select().from(apiKeys).where(and(eq(apiKeys.hash, hash), isNull(apiKeys.revokedAt)));
      return row ? toKeyRecord(row) : null;
    },
    async recordUsage(record) {
      await db.insert(usage).values(toUsageValues(record, new Date()));
    },
    async listUsage(keyId) {
      const where = keyId === undefined ? undefined : eq(usage.keyId, keyId);
      return (await db.select().from(usage).where(where).orderBy(asc(usage.id))).map(toUsageRow);
    },
    close,
  };
}
