/** Conversions between the tables' rows (identical in both dialects) and the Store's records. */
import type { ApiKeyRecord, UsageRecord, UsageRow } from './store';

interface KeyRow {
  id: number;
  name: string;
  prefix: string;
  createdAt: Date;
  revokedAt: Date | null;
}

interface UsageTableRow {
  id: number;
  keyId: number | null;
  model: string;
  promptTextTokens: number;
  promptImageTokens: number;
  promptSpeechTokens: number;
  promptAudioTokens: number;
  promptVideoTokens: number;
  completionTokens: number;
  latencyMs: number;
  status: number;
  finishReason: string | null;
  createdAt: Date;
}

export function toKeyRecord(row: KeyRow): ApiKeyRecord {
  return { id: row.id, name: row.name, prefix: row.prefix, createdAt: row.createdAt, revokedAt: row.revokedAt };
}

export function toUsageValues(r: UsageRecord, createdAt: Date): Omit<UsageTableRow, 'id'> {
  return {
    keyId: r.keyId,
    model: r.model,
    promptTextTokens: r.promptTokens.text,
    promptImageTokens: r.promptTokens.image,
    promptSpeechTokens: r.promptTokens.speech,
    promptAudioTokens: r.promptTokens.audio,
    promptVideoTokens: r.promptTokens.video,
    completionTokens: r.completionTokens,
    latencyMs: Math.round(r.latencyMs),
    status: r.status,
    finishReason: r.finishReason,
    createdAt,
  };
}

export function toUsageRow(row: UsageTableRow): UsageRow {
  return {
    id: row.id,
    keyId: row.keyId,
    model: row.model,
    promptTokens: {
      text: row.promptTextTokens,
      image: row.promptImageTokens,
      speech: row.promptSpeechTokens,
      audio: row.promptAudioTokens,
      video: row.promptVideoTokens,
    },
    completionTokens: row.completionTokens,
    latencyMs: row.latencyMs,
    status: row.status,
    finishReason: row.finishReason,
    createdAt: row.createdAt,
  };
}
