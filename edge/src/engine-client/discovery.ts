/**
 * What an edge that holds no bundle (a Worker) learns from the engine tier: the manifest and bundle hash
 * (so it builds the bundle's subjects) and the bytes of the files the manifest names (the tokenizer),
 * read in chunks under the server's max_payload.
 */
import { engineDiscoverSubject, engineSubject } from '@unimoe/shared/wire/engine-subjects';
import type { WireModel } from '@unimoe/shared/wire/subject-prefix';
import { decodeFrame, decodeJson, encodeJson, type DiscoverReply, type FileReply, type FileRequest } from './protocol';
import { TransportError, type EngineTransport } from './transport';

export async function discoverEngine(t: EngineTransport, modelName: string, timeoutMs = 5000): Promise<DiscoverReply> {
  try {
    const msg = await t.request(engineDiscoverSubject(modelName), new Uint8Array(0), { timeoutMs });
    return decodeJson<DiscoverReply>(msg.data, 'discovery reply');
  } catch (err) {
    if (!(err instanceof TransportError)) throw err;
    throw new Error(`no engine serves model ${JSON.stringify(modelName)} (${err.kind === 'timeout' ? `no answer within ${timeoutMs} ms` : 'nobody listens'} on ${engineDiscoverSubject(modelName)}); start one with \`unimoe engine <bundle> --nats URL\``, { cause: err });
  }
}

/** A file of the bundle (a path the manifest names, e.g. its tokenizer), whole. */
export async function fetchBundleFile(t: EngineTransport, model: WireModel, path: string, timeoutMs = 10_000): Promise<Uint8Array<ArrayBuffer>> {
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (;;) {
    const req: FileRequest = { path, offset };
    const msg = await t.request(engineSubject(model, 'file'), encodeJson(req), { timeoutMs });
    const { meta, bytes } = decodeFrame<FileReply & { error?: string }>(msg.data, `bundle file ${path}`);
    if (meta.error) throw new Error(`bundle file ${path}: ${meta.error}`);
    chunks.push(bytes.slice());
    offset += bytes.length;
    if (offset >= meta.size) break;
    if (bytes.length === 0) throw new Error(`bundle file ${path}: the engine sent no bytes at offset ${offset} of ${meta.size}`);
  }
  const out = new Uint8Array(offset);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** The manifest's tokenizer file, checked against the sha256 the manifest records. */
export async function fetchTokenizer(t: EngineTransport, found: DiscoverReply): Promise<Uint8Array<ArrayBuffer>> {
  const { manifest } = found;
  const bytes = await fetchBundleFile(t, { name: manifest.name, hash: found.hash }, manifest.tokenizer.file);
  const digest = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
  if (digest !== manifest.tokenizer.sha256) throw new Error(`tokenizer ${manifest.tokenizer.file} from engine ${found.engine}: sha256 ${digest}, the manifest records ${manifest.tokenizer.sha256}`);
  return bytes;
}
