/**
 * The Store's queries over any drizzle SQLite database (libsql on Node, D1 on Workers): both drivers
 * build the same SQLite dialect, so the file-backed store and the Worker's D1 store share these lines.
 * They mirror pg-store.ts line for line (drizzle types each dialect's builders and tables apart).
 */
import { and, asc, eq, isNull } from 'drizzle-orm';
import type { BaseSQLiteDatabase } from 'drizzle-orm/sqlite-core';
import { hashApiKey, newApiKey } from './api-key';
import { toKeyRecord, toUsageRow, toUsageValues } from './rows';
import { apiKeys, usage } from './schema-sqlite';
import type { Store } from './store';

/** Any driver's async SQLite database (each has its own result type). */
export type AsyncSqliteDatabase = BaseSQLiteDatabase<'async', any>;

/** The Store over an already migrated drizzle SQLite database. */
export function createSqliteStore(db: AsyncSqliteDatabase, close: () => Promise<void>): Store {
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
