/** Opens the Store that DATABASE_URL names: `file:PATH` (SQLite, the default) or `postgres://...`. */
import { openPostgresStore } from './pg-store';
import { openSqliteStore } from './sqlite-store';
import type { Store } from './store';

export const DEFAULT_DATABASE_URL = 'file:./data/unimoe.db';

export async function openStore(url: string = process.env.DATABASE_URL || DEFAULT_DATABASE_URL): Promise<Store> {
  if (url.startsWith('file:') || url.startsWith('libsql:')) return openSqliteStore(url);
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return openPostgresStore(url);
  throw new Error(`DATABASE_URL must start with file: (SQLite) or postgres:// (PostgreSQL); got "${redact(url)}"`);
}

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}
