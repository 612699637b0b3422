/** boundUsageWrites: a stuck database delays a response by at most the bound; flush() waits for the writes. */
import { describe, expect, it } from 'vitest';
import { openStore } from './open';
import type { Store, UsageRecord } from './store';
import { boundUsageWrites } from './usage-writes';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const row: UsageRecord = { keyId: null, model: 'm', promptTokens: { text: 3, image: 0, speech: 0, audio: 0, video: 0 }, completionTokens: 2, latencyMs: 1, status: 200, finishReason: 'stop' };

describe('boundUsageWrites', () => {
  it('answers after the bound while a write is stuck, and flush() waits for it to land in the database', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'usage-writes-'));
    const sqlite = await openStore(`file:${join(dir, 'u.db')}`);
    try {
      // The real SQLite store, with its writes held back until we let them go (a database that hangs).
      let letGo!: () => void;
      const gate = new Promise<void>((resolve) => (letGo = resolve));
      const slow: Store = { ...sqlite, recordUsage: (r) => gate.then(() => sqlite.recordUsage(r)) };
      const store = boundUsageWrites(slow, 50);
      const errors: string[] = [];
      const error = console.error;
      console.error = (line: string) => errors.push(line);
      try {
        await store.recordUsage(row); // returns after ~50 ms although the write has not happened
      } finally {
        console.error = error;
      }
      expect(errors.join('\n')).toMatch(/usage write is taking over 50 ms/);
      expect(await sqlite.listUsage()).toEqual([]);
      expect(await store.flush(20)).toBe(1); // still stuck: flush gives up at its bound and says so
      letGo();
      expect(await store.flush(5000)).toBe(0);
      expect((await sqlite.listUsage()).map((r) => [r.status, r.completionTokens])).toEqual([[200, 2]]);
    } finally {
      await sqlite.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
