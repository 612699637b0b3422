/** What the API and the keys CLI need from the database, whichever dialect backs it. */

export interface ApiKeyRecord {
  id: number;
  name: string;
  /** The key's first characters (`umk_` + 8), safe to show. */
  prefix: string;
  createdAt: Date;
  revokedAt: Date | null;
}

export interface PromptTokenCounts {
  text: number;
  image: number;
  /** Whisper (speech) and BEATs (audio, non-speech sound) tokens, counted apart. */
  speech: number;
  audio: number;
  video: number;
}

export interface UsageRecord {
  /** Null when the server runs with --no-auth. */
  keyId: number | null;
  model: string;
  promptTokens: PromptTokenCounts;
  completionTokens: number;
  latencyMs: number;
  status: number;
  finishReason: string | null;
}

export interface UsageRow extends UsageRecord {
  id: number;
  createdAt: Date;
}

export interface Store {
  /** Stores a new key's hash; `key` is the only copy of the secret. */
  createKey(name: string): Promise<{ key: string; record: ApiKeyRecord }>;
  listKeys(): Promise<ApiKeyRecord[]>;
  /** Marks the key revoked; returns the record, or null when no key has that id. */
  revokeKey(id: number): Promise<ApiKeyRecord | null>;
  /** The key's record when it exists and is not revoked. */
  findActiveKey(key: string): Promise<ApiKeyRecord | null>;
  recordUsage(record: UsageRecord): Promise<void>;
  /** Usage rows, oldest first; only one key's when keyId is given. */
  listUsage(keyId?: number): Promise<UsageRow[]>;
  close(): Promise<void>;
}
