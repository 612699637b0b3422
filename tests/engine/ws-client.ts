/**
 * The Worker's side of the engine tier, run as its own process with Node's WebSocket (--experimental-websocket)
 * and no `nats` package: nats-core over the NATS WebSocket listener, discovery, the tokenizer's bytes, one
 * greedy generation with streamed tokens. Prints one JSON line: what it learned and generated.
 * Usage: node --experimental-websocket --import tsx ws-client.ts WS_URL MODEL PROMPT_IDS_JSON MAX_TOKENS
 */
import { connectEngineTierWs, discoverEngine, fetchTokenizer, RemoteEngine } from '@unimoe/edge/engine-client/index';

const [url, modelName, promptJson, maxTokens] = process.argv.slice(2);
const conn = await connectEngineTierWs(url!);
try {
  const found = await discoverEngine(conn.transport, modelName!);
  const model = { name: found.manifest.name, hash: found.hash };
  const tokenizer = await fetchTokenizer(conn.transport, found);
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', tokenizer));
  const engine = new RemoteEngine({ transport: conn.transport, model });
  const streamed: number[] = [];
  const result = await engine.generate({
    promptIds: JSON.parse(promptJson!) as number[],
    params: { maxTokens: Number(maxTokens), temperature: 0, topP: 1, topK: 0 },
    onToken: (id) => void streamed.push(id),
  });
  const sha256 = [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
  console.log(JSON.stringify({ engine: found.engine, hash: found.hash, tokenizerSha256: sha256, tokenizerBytes: tokenizer.length, ids: result.ids, streamed, finishReason: result.finishReason, promptTokens: result.promptTokens }));
} finally {
  await conn.close();
}
