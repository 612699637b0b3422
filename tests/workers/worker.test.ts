// The edge API as a Cloudflare Worker under `wrangler dev` (local workerd), end to end: a real nats-server
// with its websocket listener under `unimoe nats-auth`'s per-role permissions (the Worker holds the edge's
// nkey seed as a secret), a real `unimoe engine` process on the tiny multimodal bundle, the Worker's D1
// database. Every answer is checked against the Node edge (embedded, same bundle): text (official openai client, streaming and not, logprobs), image + speech, the 4xx bodies of bad
// input; and a client that disconnects, or a request the Worker aborts, stops its generation on the engine.
import { spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { nkeys, type NatsConnection } from 'nats';
import type { EngineLoad } from '@unimoe/edge/engine-client/protocol';
import { readManifest } from '@unimoe/shared/bundle/load';
import { connectNats } from '@unimoe/shared/runtime/nats-connect';
import { engineReplicaSubject, wireModel, type WireModel } from '@unimoe/shared/wire/subjects';
import { cli } from '../helpers/cli';
import { freePort } from '@unimoe/shared/runtime/ports';
import { queryLocalD1 } from '../../infra/workers/wrangler';
import { malformedBodies } from '../api/malformed-bodies';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { makeTempDir } from '../helpers/tmp';
import { buildMultimodalBundle, chirpWav, media, MODEL } from '../multimodal/setup';
import { spawnEngine, stopEngine, type EngineProcess } from '../engine/helpers';
import { startWorkerDev, type WorkerDev } from './wrangler-dev';

const REPO = resolve(import.meta.dirname, '..', '..');

let tmp: { dir: string; cleanup: () => Promise<void> };
let nats: NatsServer;
let engine: EngineProcess;
let worker: WorkerDev;
let node: RunningServer;
let model: WireModel;
let wsUrl: string;
let edgeSeed: string;
/** The edge role's connection (its seed, its inbox), which may ask engines for their load. */
let edgeNats: NatsConnection;
let workerKey: string;
let nodeKey: string;

const clientOf = (baseURL: string, apiKey: string) => new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0 });
const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');

/** `pnpm workers:keys create NAME` on the Worker's local D1; the key is its last line. */
function createWorkerKey(stateDir: string): Promise<string> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'infra', 'workers', 'keys.ts'), 'create', 'worker-tests'], {
      cwd: REPO,
      env: { ...process.env, WORKERS_STATE_DIR: stateDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => (code === 0 ? done(out.trimEnd().split('\n').at(-1)!) : fail(new Error(`workers:keys create exited with ${code}:\n${out}`))));
  });
}

beforeAll(async () => {
  tmp = await makeTempDir('workers');
  const { bundle } = await buildMultimodalBundle(tmp.dir);
  model = wireModel(await readManifest(bundle));
  const auth = join(tmp.dir, 'auth');
  const made = await cli(['nats-auth', bundle, '--out', auth, '--pool', 'a=0-3']);
  expect(made.code, made.stderr).toBe(0);
  const wsPort = await freePort();
  nats = await startNatsServer({ config: `${await readFile(join(auth, 'nats-server.conf'), 'utf8')}\nwebsocket { host: 127.0.0.1, port: ${wsPort}, no_tls: true }\n` });
  engine = spawnEngine(bundle, nats.url, 'workers-test', ['--nats-nkey-seed', join(auth, 'engine.nk')]);
  await engine.ready;
  edgeNats = await connectNats(nats.url, 'workers-test-probe', { role: { kind: 'edge' }, security: { nkeySeed: join(auth, 'edge.nk') } });
  wsUrl = `ws://127.0.0.1:${wsPort}`;
  edgeSeed = (await readFile(join(auth, 'edge.nk'), 'utf8')).trim();
  worker = await startWorkerDev({
    vars: { NATS_WS_URL: wsUrl, MODEL, REQUESTS_PER_MINUTE: '0', MAX_CONCURRENT_PER_KEY: '0' },
    secrets: { NATS_NKEY_SEED: edgeSeed },
  });
  workerKey = await createWorkerKey(worker.stateDir);
  node = await startServer({ bundle, port: 0, databaseUrl: `file:${tmp.dir}/db/unimoe.db`, api: { requestsPerMinute: 0, maxConcurrentPerKey: 0 } });
  nodeKey = (await node.store.createKey('node-tests')).key;
});

afterAll(async () => {
  await edgeNats?.close();
  await node?.close();
  await worker?.stop();
  await stopEngine(engine);
  await nats?.stop();
  await tmp?.cleanup();
});

/** The same request to both edges. */
async function both<T>(ask: (client: OpenAI) => Promise<T>): Promise<{ fromWorker: T; fromNode: T }> {
  const fromWorker = await ask(clientOf(worker.url, workerKey));
  const fromNode = await ask(clientOf(node.url, nodeKey));
  return { fromWorker, fromNode };
}

/** A completion's fields that do not depend on which server answered (not its id or timestamp). */
const answerOf = (r: OpenAI.ChatCompletion) => ({ choices: r.choices, usage: r.usage, model: r.model });

describe('the Worker answers as the Node edge does', () => {
  it('chat, non-streaming (greedy and seeded sampling, logprobs) with the openai client; the usage row is in D1', async () => {
    for (const extra of [{ temperature: 0, logprobs: true, top_logprobs: 2 }, { temperature: 0.9, seed: 42, n: 2 }]) {
      const { fromWorker, fromNode } = await both((c) =>
        c.chat.completions.create({ model: MODEL, max_tokens: 10, messages: [{ role: 'user', content: 'Tell me about the sea.' }], ...extra }),
      );
      expect(fromWorker.choices[0]!.message.content!.length).toBeGreaterThan(0);
      expect(answerOf(fromWorker)).toEqual(answerOf(fromNode));
    }
    const rows = await queryLocalD1(worker.stateDir, 'SELECT model, status, prompt_text_tokens, completion_tokens, finish_reason FROM usage ORDER BY id');
    expect(rows.at(-1)).toMatchObject({ model: MODEL, status: 200, completion_tokens: 20 });
  });

  it('chat, streaming with usage: the same text, chunk by chunk, and the same usage', async () => {
    const collect = async (c: OpenAI) => {
      const stream = await c.chat.completions.create({
        model: MODEL,
        max_tokens: 12,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'Count to five.' }],
      });
      const deltas: string[] = [];
      let usage: OpenAI.CompletionUsage | null | undefined;
      let finish: string | null | undefined;
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta.content) deltas.push(chunk.choices[0].delta.content);
        finish ??= chunk.choices[0]?.finish_reason;
        if (chunk.usage) usage = chunk.usage;
      }
      return { text: deltas.join(''), finish, usage };
    };
    const { fromWorker, fromNode } = await both(collect);
    expect(fromWorker.text.length).toBeGreaterThan(0);
    expect(fromWorker).toEqual(fromNode);
  });

  it('text completions with logprobs', async () => {
    const { fromWorker, fromNode } = await both((c) => c.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 6, temperature: 0, logprobs: 3 }));
    expect(fromWorker.choices[0]!.logprobs!.tokens!.length).toBe(6);
    expect({ choices: fromWorker.choices, usage: fromWorker.usage }).toEqual({ choices: fromNode.choices, usage: fromNode.usage });
  });

  it('response_format (compiled by the engine): the same JSON output, and the same 400 for a bad schema', async () => {
    const schema = { type: 'object', properties: { answer: { type: 'integer' } }, required: ['answer'], additionalProperties: false };
    const { fromWorker, fromNode } = await both((c) =>
      c.chat.completions.create({ model: MODEL, max_tokens: 24, temperature: 0, messages: [{ role: 'user', content: 'A number?' }], response_format: { type: 'json_schema', json_schema: { name: 'n', schema } } }),
    );
    expect(answerOf(fromWorker)).toEqual(answerOf(fromNode));
    const bad = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema', json_schema: { name: 'n', schema: { type: 'object', properties: { a: { $ref: '#/nowhere' } } } } } });
    const ask = (base: string, key: string) =>
      fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' }, body: bad }).then(async (r) => ({ status: r.status, body: await r.json() }));
    const fromWorkerBad = await ask(worker.url, workerKey);
    expect(fromWorkerBad.status).toBe(400);
    expect(fromWorkerBad).toEqual(await ask(node.url, nodeKey));
  });

  it('an image and speech (PNG, JPEG, WAV decoded in the Worker): the same answer and usage per modality', async () => {
    for (const [mime, file] of [['image/png', 'rgb_64x48.png'], ['image/jpeg', 'photo_800x600.jpg']] as const) {
      const { fromWorker, fromNode } = await both((c) =>
        c.chat.completions.create({
          model: MODEL,
          max_tokens: 6,
          temperature: 0,
          messages: [
            {
              role: 'user',
              content: [
                { type: 'text', text: 'What do you see and hear?' },
                { type: 'image_url', image_url: { url: `data:${mime};base64,${b64(media(file))}` } },
                { type: 'input_audio', input_audio: { data: b64(media('speech_16k_s16.wav')), format: 'wav', modality: 'speech' } },
              ] as unknown as OpenAI.ChatCompletionContentPart[],
            },
          ],
        }),
      );
      expect(fromWorker.usage!.prompt_tokens_details).toMatchObject({ image_tokens: 576, speech_tokens: 50 });
      expect(answerOf(fromWorker)).toEqual(answerOf(fromNode));
    }
    const [row] = await queryLocalD1(worker.stateDir, 'SELECT prompt_image_tokens, prompt_speech_tokens, status FROM usage ORDER BY id DESC LIMIT 1');
    expect(row).toEqual({ prompt_image_tokens: 576, prompt_speech_tokens: 50, status: 200 });
  });
});

/**
 * invalid_json messages quote the JSON parser's own words, which differ between V8 releases (workerd's adds
 * "(line 1 column 2)"): those are compared up to the parser's text; every other body is compared whole.
 */
function withoutSyntaxDetail(body: { error: { code: string | null; message: string } }) {
  if (body.error.code !== 'invalid_json') return body;
  return { error: { ...body.error, message: body.error.message.replace(/\(.*\)\. The body/, '(...). The body') } };
}

describe('bad input', () => {
  const post = (base: string, key: string, body: string) =>
    fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' }, body });

  it('the same status and body as the Node edge for every malformed request', async () => {
    const bodies = malformedBodies(MODEL);
    expect(bodies.length).toBeGreaterThan(150);
    for (const body of bodies) {
      const w = await post(worker.url, workerKey, body);
      const n = await post(node.url, nodeKey, body);
      const got = { status: w.status, body: withoutSyntaxDetail(await w.json()) };
      expect(got.status, body.slice(0, 200)).toBeGreaterThanOrEqual(400);
      expect(got, body.slice(0, 200)).toEqual({ status: n.status, body: withoutSyntaxDetail(await n.json()) });
    }
  });

  it('unknown and missing API keys: the Node edge 401 bodies', async () => {
    const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] });
    for (const key of ['umk_notARealKeyAtAll000000000000000000000000000', '']) {
      const w = await post(worker.url, key, body);
      const n = await post(node.url, key, body);
      expect({ status: w.status, body: await w.json() }).toEqual({ status: n.status, body: await n.json() });
      expect(w.status).toBe(401);
    }
  });

  it('formats that need ffmpeg are refused by name (415), the rest of the API unaffected', async () => {
    const mp3 = new Uint8Array([...new TextEncoder().encode('ID3'), 4, 0, 0, 0, 0, 0, 0, ...new Uint8Array(64)]);
    const cases = [
      [{ type: 'input_audio', input_audio: { data: b64(mp3), format: 'mp3', modality: 'speech' } }, 'MP3 audio needs ffmpeg'],
      [{ type: 'video_url', video_url: { url: `data:video/x-matroska;base64,${b64(media('frames12_32x24_ffv1.mkv'))}` } }, 'WebM/Matroska video needs ffmpeg'],
    ] as const;
    for (const [part, message] of cases) {
      const res = await post(worker.url, workerKey, JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }, part] }] }));
      const { error } = await res.json();
      expect(res.status).toBe(415);
      expect(error).toMatchObject({ type: 'invalid_request_error', code: 'unsupported_media', param: 'messages[0].content[1]' });
      expect(error.message).toContain(message);
    }
    // A WAV of sound (not speech) still decodes in the Worker.
    const ok = await post(worker.url, workerKey, JSON.stringify({ model: MODEL, max_tokens: 2, messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: b64(chirpWav(2)), format: 'wav', modality: 'audio' } }] }] }));
    expect(ok.status).toBe(200);
  });
});

describe('NATS credentials', () => {
  it('a Worker whose nkey the server does not know answers 503 engine_unavailable, naming the refusal', async () => {
    const stranger = await startWorkerDev({ vars: { NATS_WS_URL: wsUrl, MODEL }, secrets: { NATS_NKEY_SEED: new TextDecoder().decode(nkeys.createUser().getSeed()) } });
    try {
      const res = await fetch(`${stranger.url}/v1/models`, { headers: { Authorization: `Bearer ${workerKey}` } });
      const { error } = await res.json();
      expect(res.status).toBe(503);
      expect(error).toMatchObject({ type: 'server_error', code: 'engine_unavailable' });
      expect(error.message).toMatch(/engine tier cannot be reached: the NATS websocket at ws:\/\/127.0.0.1:\d+ refused the connection/);
    } finally {
      await stranger.stop();
    }
  });
});

describe('cancellation', () => {
  const load = async (): Promise<EngineLoad> =>
    JSON.parse(new TextDecoder().decode((await edgeNats.request(engineReplicaSubject(model, engine.id, 'stats'), new Uint8Array(0), { timeout: 5000 })).data));
  /** Polls the engine until it runs nothing (or 10 s pass). */
  const settled = async (): Promise<EngineLoad> => {
    let now = await load();
    for (const deadline = Date.now() + 10_000; now.active > 0 && Date.now() < deadline; ) now = await load();
    return now;
  };
  const usageRows = async () => Number((await queryLocalD1(worker.stateDir, 'SELECT count(*) AS n FROM usage'))[0]!.n);
  const endless = { model: MODEL, max_tokens: 1800, ignore_eos: true, n: 8, stream: true, messages: [{ role: 'user', content: 'Go on forever.' }] };

  it('a client that disconnects mid-stream stops its generation on the engine, every time', async () => {
    // Local workerd reports only about half of these disconnects on its own (edge/src/worker/client-stream.ts):
    // several in a row fail without the Worker's own detection.
    for (let round = 0; round < 5; round++) {
      const before = await load();
      const rows = await usageRows();
      await readThenDisconnect(worker.url, workerKey, endless);
      const after = await settled();
      expect(after.active, `round ${round}`).toBe(0);
      expect(after.accepted).toBe(before.accepted + 1);
      // Stopped well before its 8 x max_tokens, and makes no more tokens afterwards.
      expect(after.generatedTokens - before.generatedTokens, `round ${round}`).toBeLessThan(8 * endless.max_tokens);
      await new Promise((r) => setTimeout(r, 300));
      expect((await load()).generatedTokens).toBe(after.generatedTokens);
      // Recorded as the Node edge records a client gone: 499, finish_reason abort, the tokens it made.
      for (const deadline = Date.now() + 10_000; (await usageRows()) === rows && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 100));
      const [row] = await queryLocalD1(worker.stateDir, 'SELECT status, finish_reason, completion_tokens FROM usage ORDER BY id DESC LIMIT 1');
      expect(row, `round ${round}`).toMatchObject({ status: 499, finish_reason: 'abort' });
      expect(row!.completion_tokens).toBeLessThan(8 * endless.max_tokens);
    }
  });

  it('a request the Worker aborts mid-stream (its request timeout) stops its generation on the engine', async () => {
    // The same AbortSignal path as a client that disconnects (generation.ts joins both), and a 504 in its stream.
    const impatient = await startWorkerDev({
      vars: { NATS_WS_URL: wsUrl, MODEL, NO_AUTH: 'true', REQUEST_TIMEOUT_MS: '1500' },
      secrets: { NATS_NKEY_SEED: edgeSeed },
    });
    try {
      const before = await load();
      const maxTokens = endless.max_tokens;
      const res = await fetch(`${impatient.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(endless),
      });
      const events = await res.text();
      // The stream ends with the timeout's error event, after some tokens.
      expect(events).toContain('"delta":{"content":');
      expect(events).toContain('request_timeout');
      const after = await settled();
      expect(after.active).toBe(0);
      expect(after.accepted).toBe(before.accepted + 1);
      // Stopped well before its 8 x max_tokens; and the engine makes no more tokens afterwards.
      expect(after.generatedTokens - before.generatedTokens).toBeLessThan(8 * maxTokens);
      await new Promise((r) => setTimeout(r, 300));
      expect((await load()).generatedTokens).toBe(after.generatedTokens);
      // Recorded as the Node edge records it: 504, finish_reason abort.
      const [row] = await queryLocalD1(impatient.stateDir, 'SELECT status, finish_reason, completion_tokens FROM usage ORDER BY id DESC LIMIT 1');
      expect(row).toMatchObject({ status: 504, finish_reason: 'abort' });
      expect(row!.completion_tokens).toBeLessThan(8 * maxTokens);
    } finally {
      await impatient.stop();
    }
  });
});

/** Opens a stream, reads until the first generated token arrives, then drops the connection as a closed tab would. */
function readThenDisconnect(url: string, key: string, body: object): Promise<void> {
  return new Promise((done, fail) => {
    const req = httpRequest(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` } }, (res) => {
      if (res.statusCode !== 200) fail(new Error(`status ${res.statusCode}`));
      let seen = '';
      res.on('data', (d: Buffer) => {
        seen += d.toString();
        if (seen.includes('"delta":{"content":')) {
          req.destroy();
          done();
        }
      });
      res.on('end', () => fail(new Error(`the stream ended before the client left:\n${seen.slice(-500)}`)));
    });
    req.on('error', (err) => fail(err));
    req.end(JSON.stringify(body));
  });
}
