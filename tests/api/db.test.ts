// Keys and usage through drizzle on both dialects: a SQLite file (libsql) and PostgreSQL (PGlite).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '@unimoe/edge/db/open';
import { openPgliteStore } from '@unimoe/edge/db/pglite-store';
import type { Store } from '@unimoe/edge/db/store';
import { makeTempDir } from '../helpers/tmp';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

function storeContract(name: string, open: () => Promise<{ store: Store; raw: (sql: string) => Promise<Record<string, unknown>[]>; cleanup: () => Promise<void> }>) {
  describe(name, () => {
    let store: Store;
    let raw: (sql: string) => Promise<Record<string, unknown>[]>;
    let cleanup: () => Promise<void>;
    beforeAll(async () => {
      ({ store, raw, cleanup } = await open());
    });
    afterAll(async () => {
      await store.close();
      await cleanup();
    });

    it('creates keys of the documented form and stores only their sha256', async () => {
      const { key, record } = await store.createKey('alice');
      expect(key).toMatch(/^umk_[A-Za-z0-9_-]{43}$/);
      expect(Buffer.from(key.slice(4), 'base64url')).toHaveLength(32);
      expect(record).toMatchObject({ name: 'alice', prefix: key.slice(0, 12), revokedAt: null });
      const rows = await raw('SELECT name, prefix, hash FROM api_keys');
      expect(rows).toEqual([{ name: 'alice', prefix: key.slice(0, 12), hash: sha256(key) }]);
      expect(JSON.stringify(rows)).not.toContain(key);
      expect((await store.findActiveKey(key))?.id).toBe(record.id);
      expect(await store.findActiveKey(key + 'x')).toBeNull();
    });

    it('lists and revokes keys; a revoked key no longer authenticates', async () => {
      const { key, record } = await store.createKey('bob');
      const before = Date.now();
      const revoked = await store.revokeKey(record.id);
      expect(revoked?.revokedAt?.getTime()).toBeGreaterThanOrEqual(before - 1000);
      expect(await store.findActiveKey(key)).toBeNull();
      expect(await store.revokeKey(9999)).toBeNull();
      const list = await store.listKeys();
      expect(list.map((k) => [k.name, k.revokedAt !== null])).toEqual([
        ['alice', false],
        ['bob', true],
      ]);
    });

    it('records one usage row per request with per-modality prompt tokens', async () => {
      const [alice] = await store.listKeys();
      await store.recordUsage({ keyId: alice!.id, model: 'tiny', promptTokens: { text: 7, image: 576, speech: 100, audio: 50, video: 1 }, completionTokens: 9, latencyMs: 12.6, status: 200, finishReason: 'stop' });
      await store.recordUsage({ keyId: null, model: 'tiny', promptTokens: { text: 0, image: 0, speech: 0, audio: 0, video: 0 }, completionTokens: 0, latencyMs: 1, status: 400, finishReason: null });
      const mine = await store.listUsage(alice!.id);
      expect(mine).toHaveLength(1);
      expect(mine[0]).toMatchObject({ keyId: alice!.id, model: 'tiny', promptTokens: { text: 7, image: 576, speech: 100, audio: 50, video: 1 }, completionTokens: 9, latencyMs: 13, status: 200, finishReason: 'stop' });
      expect(mine[0]!.createdAt).toBeInstanceOf(Date);
      expect((await store.listUsage()).map((u) => u.status)).toEqual([200, 400]);
      const cols = await raw('SELECT prompt_image_tokens, prompt_speech_tokens, prompt_audio_tokens, completion_tokens FROM usage ORDER BY id');
      expect(cols[0]).toEqual({ prompt_image_tokens: 576, prompt_speech_tokens: 100, prompt_audio_tokens: 50, completion_tokens: 9 });
    });
  });
}

storeContract('SQLite store (libsql file)', async () => {
  const { dir, cleanup } = await makeTempDir('api-db');
  const path = join(dir, 'nested', 'unimoe.db');
  const store = await openStore(`file:${path}`);
  // Read back with Debian's sqlite3 CLI: an independent reader of the file drizzle wrote.
  const raw = async (sql: string) => {
    const out = execFileSync('sqlite3', ['-json', path, sql], { encoding: 'utf8' }).trim();
    return out ? (JSON.parse(out) as Record<string, unknown>[]) : [];
  };
  return { store, raw, cleanup };
});

storeContract('PostgreSQL store (PGlite)', async () => {
  const pg = new PGlite();
  const store = await openPgliteStore(pg);
  return { store, raw: async (sql) => (await pg.query<Record<string, unknown>>(sql)).rows, cleanup: async () => {} };
});

describe('openStore', () => {
  it('names the accepted schemes for an unknown DATABASE_URL and hides credentials', async () => {
    await expect(openStore('mysql://user:secret@host/db')).rejects.toThrow(/must start with file: \(SQLite\) or postgres:\/\/.*mysql:\/\/\*\*\*@host\/db/);
  });

  it('migrates an existing SQLite database idempotently', async () => {
    const { dir, cleanup } = await makeTempDir('api-db2');
    const url = `file:${join(dir, 'x.db')}`;
    const a = await openStore(url);
    const { key } = await a.createKey('k');
    await a.close();
    const b = await openStore(url);
    expect((await b.findActiveKey(key))?.name).toBe('k');
    await b.close();
    await cleanup();
  });
});
