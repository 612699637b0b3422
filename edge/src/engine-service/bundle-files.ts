/**
 * What an engine tells edges that hold no bundle: discovery (manifest, bundle hash, engine id) and the
 * bytes of the files its manifest names for the edge's side of the work (the tokenizer), in chunks under
 * the server's max_payload. Only those files: a request cannot name any other path.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { HEADER_ALLOWANCE_BYTES } from '@unimoe/shared/wire/split';
import type { EngineTransport, TransportMsg } from '../engine-client/transport';
import { decodeJson, encodeFrame, encodeJson, type DiscoverReply, type FileRequest } from '../engine-client/protocol';

export function discoverReply(engine: string, hash: string, manifest: Manifest): Uint8Array {
  const reply: DiscoverReply = { engine, hash, manifest };
  return encodeJson(reply);
}

/** Answers FileRequests for the files the edge needs (the tokenizer), read once. */
export function bundleFileServer(t: EngineTransport, bundleDir: string, manifest: Manifest): (m: TransportMsg) => void {
  const served = new Map<string, Promise<Uint8Array>>([[manifest.tokenizer.file, readFile(join(bundleDir, manifest.tokenizer.file)).then((b) => new Uint8Array(b))]]);
  return (m) => {
    if (!m.reply) return;
    const reply = m.reply;
    void (async () => {
      let req: FileRequest;
      try {
        req = decodeJson<FileRequest>(m.data, 'file request');
      } catch (err) {
        return t.publish(reply, encodeFrame({ size: 0, error: (err as Error).message }));
      }
      const file = served.get(req.path);
      if (!file) return t.publish(reply, encodeFrame({ size: 0, error: `not a file this engine serves (it serves: ${[...served.keys()].join(', ')})` }));
      const bytes = await file;
      const offset = Number.isSafeInteger(req.offset) && req.offset >= 0 ? Math.min(req.offset, bytes.length) : 0;
      const room = t.maxPayload() - HEADER_ALLOWANCE_BYTES - 64;
      t.publish(reply, encodeFrame({ size: bytes.length }, bytes.subarray(offset, offset + room)));
    })();
  };
}
