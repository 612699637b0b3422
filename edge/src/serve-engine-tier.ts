/**
 * The Node edge in front of the engine tier (`serve --engine-nats`): generations go to `unimoe engine`
 * processes over NATS (RemoteEngine); this process validates, tokenizes, decodes and lays out media,
 * and checks response_format with an engine. The manifest and tokenizer come from the bundle argument
 * (nothing else of it is read or fetched) or, without one, from an engine (discovery).
 */
import { readManifest } from '@unimoe/shared/bundle/load';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { log } from '@unimoe/shared/log';
import { connectNats } from '@unimoe/shared/runtime/nats-connect';
import { roleInboxPrefix, type NatsRole } from '@unimoe/shared/runtime/nats-auth';
import { loadTokenizer, type TextTokenizer } from '@unimoe/shared/tokenizer/index';
import { wireModel, type WireModel } from '@unimoe/shared/wire/subjects';
import { createChatTokenizer } from './api/prompt';
import { openTokenizer } from './cli/bundle-access';
import { noUnits, resolveBundle } from './cli/resolve-bundle';
import { discoverEngine, fetchTokenizer } from './engine-client/discovery';
import { nodeNatsTransport } from './engine-client/node-nats-transport';
import { RemoteEngine } from './engine-client/remote-engine';
import { RemoteOutputGrammar } from './engine-client/remote-grammar';
import type { EngineTransport } from './engine-client/transport';
import { RoutedTokens } from './api/routed-tokens';
import { servableModalities } from './multimodal/features';
import { MultimodalPipeline } from './multimodal/pipeline';
import type { EngineTierServeOptions } from './serve';

const ROLE: NatsRole = { kind: 'edge' };

export async function openEngineTier(opts: EngineTierServeOptions, cleanup: (() => Promise<void>)[]) {
  if (!opts.bundle && !opts.model) throw new Error('serve --engine-nats needs the bundle (for its manifest and tokenizer) or --model NAME (to discover them from an engine)');
  const nc = await connectNats(opts.engineNatsUrl, 'unimoe-edge-engine-tier', { role: ROLE, security: opts.natsSecurity });
  cleanup.push(() => nc.drain().catch(() => nc.close()));
  const t = nodeNatsTransport(nc, roleInboxPrefix(ROLE));
  const { manifest, model, textTokenizer } = opts.bundle ? await fromBundle(opts.bundle) : await fromEngines(t, opts.model!);
  if (opts.model && opts.model !== manifest.name) throw new Error(`--model ${opts.model}: the bundle is ${manifest.name}`);
  const engine = new RemoteEngine({
    transport: t,
    model,
    ...(opts.acceptTimeoutMs ? { acceptTimeoutMs: opts.acceptTimeoutMs } : {}),
    ...(opts.silenceMs ? { silenceMs: opts.silenceMs } : {}),
  });
  cleanup.push(() => engine.close());
  // Media is decoded and laid out here and encoded by the engine: a pipeline without encoders.
  const multimodal = servableModalities(manifest).length > 0 ? new MultimodalPipeline(manifest, undefined, opts.media) : undefined;
  const ready = async () => {
    try {
      await discoverEngine(t, manifest.name, 2000);
      return { ok: true, missing: [] };
    } catch {
      return { ok: false, missing: ['engine'] };
    }
  };
  return {
    manifest,
    tokenizer: createChatTokenizer(textTokenizer, manifest),
    engine,
    full: () => null,
    ...(multimodal ? { multimodal } : {}),
    grammar: new RemoteOutputGrammar(t, model),
    ready,
    routed: new RoutedTokens(manifest.config.layers, manifest.config.experts),
  };
}

async function fromBundle(bundle: string): Promise<{ manifest: Manifest; model: WireModel; textTokenizer: TextTokenizer }> {
  const bundleDir = await resolveBundle(bundle, noUnits);
  const manifest = await readManifest(bundleDir);
  return { manifest, model: wireModel(manifest), textTokenizer: await openTokenizer(bundleDir, manifest) };
}

async function fromEngines(t: EngineTransport, modelName: string): Promise<{ manifest: Manifest; model: WireModel; textTokenizer: TextTokenizer }> {
  const found = await discoverEngine(t, modelName);
  const { manifest } = found;
  const model = wireModel(manifest);
  if (model.hash !== found.hash) throw new Error(`engine ${found.engine} gave bundle hash ${found.hash} for a manifest that hashes to ${model.hash}`);
  const bytes = await fetchTokenizer(t, found);
  log.info({ model: manifest.name, engine: found.engine }, `manifest and tokenizer of ${manifest.name} from engine ${found.engine}`);
  return { manifest, model, textTokenizer: loadTokenizer(manifest.tokenizer.kind ?? 'sentencepiece', bytes) };
}
