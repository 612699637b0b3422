/** PostgreSQL tables for API keys and per-request usage. Mirrors schema-sqlite.ts column for column. */
import { index, integer, pgTable, serial, text, timestamp } from 'drizzle-orm/pg-core';

export const apiKeys = pgTable('api_keys', {
  id: serial('id').primaryKey(),
  name: text('name').notNull(),
  /** The first characters of the key, shown in listings so a user can tell keys apart. */
  prefix: text('prefix').notNull(),
  /** sha256 of the full key, hex; the key itself is never stored. */
  hash: text('hash').notNull().unique(),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull(),
  revokedAt: timestamp('revoked_at', { withTimezone: true, mode: 'date' }),
});

export const usage = pgTable(
  'usage',
  {
    id: serial('id').primaryKey(),
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
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull(),
  },
  (t) => [index('usage_key_created_idx').on(t.keyId, t.createdAt)],
);
