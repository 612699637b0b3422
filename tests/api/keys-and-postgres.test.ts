// The keys CLI against the database a server uses, and the PostgreSQL path (PGlite) end to end.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPgliteStore } from '@unimoe/edge/db/pglite-store';
import { startServer } from '@unimoe/edge/serve';
import { makeTempDir } from '../helpers/tmp';
import { convertTinyBundle, MODEL, pythonSentencePiece, vicunaPrompt } from './helpers';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
let tmp: { dir: string; cleanup: () => Promise<void> };
let bundle: string;

beforeAll(async () => {
  tmp = await makeTempDir('api-keys');
  bundle = await convertTinyBundle(tmp.dir);
});
afterAll(async () => {
  await tmp?.cleanup();
});

function unimoe(args: string[], databaseUrl: string) {
  const out = spawnSync(process.execPath, ['--import', 'tsx', 'edge/src/cli/main.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: databaseUrl },
    encoding: 'utf8',
  });
  return { code: out.status, stdout: out.stdout, stderr: out.stderr, lastLine: out.stdout.trim().split('\n').at(-1) ?? '' };
}

describe('unimoe keys', () => {
  it('creates, lists and revokes keys that the server honours', async () => {
    const db = `file:${tmp.dir}/keys/unimoe.db`;
    const created = unimoe(['keys', 'create', 'ci bot'], db);
    expect(created.code, created.stderr).toBe(0);
    const key = created.lastLine;
    expect(key).toMatch(/^umk_[A-Za-z0-9_-]{43}$/);

    const list = unimoe(['keys', 'list'], db);
    expect(list.code).toBe(0);
    const [header, row] = list.stdout.trim().split('\n');
    expect(header!.split(/\s{2,}/)).toEqual(['ID', 'NAME', 'PREFIX', 'CREATED', 'REVOKED']);
    expect(row!.split(/\s{2,}/)).toEqual(['1', 'ci bot', key.slice(0, 12), expect.stringMatching(/^\d{4}-\d\d-\d\dT/), '-']);
    expect(list.stdout).not.toContain(key);

    const server = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: db });
    try {
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: key, maxRetries: 0 });
      expect((await client.models.list()).data[0]!.id).toBe(MODEL);
      const revoked = unimoe(['keys', 'revoke', '1'], db);
      expect(revoked.code).toBe(0);
      expect(revoked.stdout).toMatch(/revoked key 1 "ci bot"/);
      await expect(client.models.list()).rejects.toMatchObject({ status: 401 });
    } finally {
      await server.close();
    }
    const listed = JSON.parse(unimoe(['keys', 'list', '--json'], db).lastLine);
    expect(listed[0]).toMatchObject({ id: 1, name: 'ci bot', revokedAt: expect.any(String) });
  });

  it('fails clearly on bad invocations', () => {
    const db = `file:${tmp.dir}/keys2/unimoe.db`;
    expect(unimoe(['keys', 'revoke', '42'], db)).toMatchObject({ code: 1, stderr: expect.stringMatching(/no API key has id 42/) });
    expect(unimoe(['keys', 'revoke', 'abc'], db)).toMatchObject({ code: 1, stderr: expect.stringMatching(/numeric ID/) });
    expect(unimoe(['keys', 'create'], db)).toMatchObject({ code: 1, stderr: expect.stringMatching(/needs a NAME/) });
    expect(unimoe(['keys', 'frobnicate'], db)).toMatchObject({ code: 1, stderr: expect.stringMatching(/unknown keys action "frobnicate"/) });
    expect(unimoe(['keys', 'list'], 'mysql://x')).toMatchObject({ code: 1, stderr: expect.stringMatching(/DATABASE_URL must start with file:/) });
  });
});

describe('PostgreSQL (PGlite) behind the server', () => {
  it('migrates, authenticates keys and writes usage rows', async () => {
    const pg = new PGlite();
    const store = await openPgliteStore(pg);
    const server = await startServer({ bundle, port: 0, host: '127.0.0.1', store });
    try {
      const { key, record } = await store.createKey('pg');
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: key, maxRetries: 0 });
      const res = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 5, temperature: 0 });
      const promptIds = pythonSentencePiece({ encode: [vicunaPrompt('Hello there')] }).encoded[0]!;
      expect(res.usage).toMatchObject({ prompt_tokens: promptIds.length, completion_tokens: 5 });
      const rows = (await pg.query<Record<string, unknown>>('SELECT key_id, model, prompt_text_tokens, completion_tokens, status, finish_reason FROM usage')).rows;
      expect(rows).toEqual([{ key_id: record.id, model: MODEL, prompt_text_tokens: promptIds.length, completion_tokens: 5, status: 200, finish_reason: 'length' }]);
      const tables = (await pg.query<{ tablename: string }>("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")).rows.map((r) => r.tablename);
      expect(tables).toEqual(['api_keys', 'usage']);
    } finally {
      await server.close();
      await store.close();
    }
  });
});
