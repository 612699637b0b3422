// Admission control (bounded queue, KV-cache budget: 503 + Retry-After) and the graceful shutdown
// (not ready, new requests refused, running streams finish or are stopped at the bound, every usage row
// written) against a real server on the tiny Uni-MoE 4e bundle with SQLite usage rows.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '@unimoe/edge/db/open';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { slotCapacity } from '@unimoe/edge/engine/kv-cache';
import { makeTempDir } from '../helpers/tmp';
import { convertTinyBundle, MODEL, readSse, waitFor } from './helpers';

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let bundle: string;

beforeAll(async () => {
  tmp = await makeTempDir('admission');
  bundle = await convertTinyBundle(tmp.dir);
});
afterAll(async () => {
  await tmp?.cleanup();
});

const chat = (maxTokens: number, stream = false) => ({
  model: MODEL,
  messages: [{ role: 'user', content: 'Hello there' }],
  max_tokens: maxTokens,
  temperature: 0,
  stream,
});
const post = (server: RunningServer, body: unknown) =>
  fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

/** What one position of KV cache costs, from the bundle's config: keys and values, every layer, float32. */
const kvBytesPerPosition = (s: RunningServer) => {
  const c = s.manifest.config;
  return c.layers * 2 * c.kvHeads * c.headDim * 4;
};

describe('admission control', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/adm.db`, api: { noAuth: true }, engine: { maxBatch: 1, maxWaiting: 0 } });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('answers 503 with Retry-After beyond the queue bound, for JSON and streams alike, and admits again once there is room', async () => {
    const long = post(server, chat(1500, true));
    await waitFor(() => server.engine.stats().running === 1, 10_000, 'the long request to run');
    for (const stream of [false, true]) {
      const refused = await post(server, chat(4, stream));
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('1');
      const body = (await refused.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('server_overloaded');
      expect(body.error.message).toMatch(/at capacity: every batch slot is taken and 0 requests wait \(queue limit 0\)/);
    }
    const events = await readSse(await long);
    expect(events.at(-1)).toBe('[DONE]');
    const ok = await post(server, chat(4));
    expect(ok.status).toBe(200);
  });

  it('reserves each request its KV slot (prompt + max_tokens - 1 positions, rounded up to its class) and refuses what the budget cannot hold', async () => {
    const perPosition = kvBytesPerPosition(server);
    const promptTokens = ((await (await post(server, chat(1))).json()) as { usage: { prompt_tokens: number } }).usage.prompt_tokens;
    const slot = slotCapacity(promptTokens + 1500 - 1);
    const budget = slot * perPosition; // exactly one slot of the 1500-token request's class
    const budgeted = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/kv.db`, api: { noAuth: true }, engine: { maxBatch: 4, kvBudgetBytes: budget } });
    try {
      const tooBig = await post(budgeted, chat(slot - promptTokens + 2)); // one position beyond the class: the next, twice the bytes
      expect(tooBig.status).toBe(503);
      expect(tooBig.headers.get('retry-after')).toBe('1');
      expect(((await tooBig.json()) as { error: { message: string } }).error.message).toMatch(/needs up to [\d.]+ MiB of KV cache/);
      const fits = post(budgeted, chat(1500, true));
      await waitFor(() => budgeted.engine.stats().running === 1, 10_000, 'the 1500-token request to run');
      expect(budgeted.engine.kvReservedBytes()).toBe(budget);
      const refused = await post(budgeted, chat(1)); // a free batch slot, but no KV budget left
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/KV-cache budget of [\d.]+ MiB is taken/);
      expect((await readSse(await fits)).at(-1)).toBe('[DONE]');
      expect(budgeted.engine.kvReservedBytes()).toBe(0); // freed when it left
      expect((await post(budgeted, chat(1))).status).toBe(200);
    } finally {
      await budgeted.close();
    }
  });
});

describe('graceful shutdown', () => {
  it('reports not ready, refuses new requests, lets running streams finish, writes every usage row', async () => {
    const db = `file:${tmp.dir}/drain.db`;
    const server = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: db, api: { noAuth: true }, drainMs: 60_000 });
    const reference = await (await post(server, chat(300))).json() as { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
    const running = [post(server, chat(300, true)), post(server, chat(300, true))];
    await waitFor(() => server.engine.stats().running === 2, 10_000, 'two streams to run');
    const stopped = server.shutdown();

    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(503);
    const refused = await post(server, chat(4));
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/shutting down/);

    for (const res of running) {
      const events = await readSse(await res);
      expect(events.at(-1)).toBe('[DONE]');
      const text = events.slice(0, -1).map((e) => (JSON.parse(e) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? '').join('');
      expect(text).toBe(reference.choices[0]!.message.content); // finished, not cut short
    }
    await stopped;
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow(); // the listener is closed

    const store = await openStore(db);
    try {
      const rows = await store.listUsage();
      expect(rows.map((r) => [r.status, r.completionTokens])).toEqual([
        [200, reference.usage.completion_tokens],
        [200, reference.usage.completion_tokens],
        [200, reference.usage.completion_tokens],
      ]);
    } finally {
      await store.close();
    }
  });

  it('stops streams still running at the drain bound with a 503 error event, and records them', async () => {
    const db = `file:${tmp.dir}/bound.db`;
    const server = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: db, api: { noAuth: true, maxTokensCap: 4000 }, drainMs: 200 });
    const res = post(server, chat(3000, true));
    await waitFor(() => server.engine.stats().running === 1, 10_000, 'the stream to run');
    await server.shutdown();
    const events = await readSse(await res);
    const last = JSON.parse(events.at(-1)!) as { error: { code: string; message: string } };
    expect(last.error.code).toBe('server_overloaded');
    expect(last.error.message).toMatch(/shutting down/);
    const store = await openStore(db);
    try {
      const rows = await store.listUsage();
      expect(rows.map((r) => r.status)).toEqual([503]);
    } finally {
      await store.close();
    }
  });
});
