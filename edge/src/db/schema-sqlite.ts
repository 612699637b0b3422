/** SQLite tables for API keys and per-request usage (libsql driver). Mirrors schema-pg.ts column for column. */
import { index, integer, sqliteTable, text } from 'drizzle-orm/sqlite-core';

export const apiKeys = sqliteTable('api_keys', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  name: text('name').notNull(),
  /** The first characters of the key, shown in listings so a user can tell keys apart. */
  prefix: text('prefix').notNull(),
  /** sha256 of the full key, hex; the key itself is never stored. */
  hash: text('hash').notNull().unique(),
  createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
  revokedAt: integer('revoked_at', { mode: 'timestamp_ms' }),
});

export const usage = sqliteTable(
  'usage',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    keyId: integer('key_id').references(() => apiKeys.id),
    model: text('model').notNull(),
    promptTextTokens: integer('prompt_text_tokens').notNull().default(0),
    promptImageTokens: integer('prompt_image_tokens').notNull().default(0),
    promptSpeechTokens: integer('prompt_speech_tokens').notNull().default(0),
    promptAudioTokens: integer('prompt_audio_tokens').notNull().default(0),
    promptVideoTokens: integer('prompt_video_tokens').notNull().default(0),
    completionTokens: integer('completion_tokens').notNull().default(0),
    latencyMs: integer('latency_ms').notNull(),
    status: integer('status').notNull(),
    finishReason: text('finish_reason'),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [index('usage_key_created_idx').on(t.keyId, t.createdAt)],
);
