/**
 * The Store on SQLite through libsql (a local file by default, or any libsql URL). Its queries mirror
 * pg-store.ts line for line: drizzle types each dialect's builders and tables apart, so they are not shared.
 */
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient } from '@libsql/client';
import { and, asc, eq, isNull } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/libsql';
import { migrate } from 'drizzle-orm/libsql/migrator';
import { hashApiKey, newApiKey } from './api-key';
import { toKeyRecord, toUsageRow, toUsageValues } from './rows';
import { apiKeys, usage } from './schema-sqlite';
import type { Store } from './store';

const MIGRATIONS = fileURLToPath(new URL('../../drizzle/sqlite', import.meta.url));

/** Opens (creating the file and its folder if needed) and migrates a SQLite database; url is `file:PATH`. */
export async function openSqliteStore(url: string): Promise<Store> {
  if (url.startsWith('file:') && url !== 'file::memory:') {
    await mkdir(dirname(url.slice('file:'.length)), { recursive: true });
  }
  const client = createClient({ url });
  const db = drizzle(client);
  await migrate(db, { migrationsFolder: MIGRATIONS });

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
    async close() {
      client.close();
    },
  };
}
