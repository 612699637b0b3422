/**
 * The engine tier's client, for any runtime (a Worker included): nothing here imports node:* or the `nats`
 * package. The Node edge adds ./node-nats-transport.
 */
export { RemoteEngine, type RemoteEngineOptions } from './remote-engine';
export { RemoteOutputGrammar } from './remote-grammar';
export { discoverEngine, fetchBundleFile, fetchTokenizer } from './discovery';
export { natsCoreTransport } from './nats-core-transport';
export { connectEngineTierWs, type EngineTierConnection } from './ws-connect';
export { TransportError, type EngineTransport, type TransportMsg, type Subscription } from './transport';
export { ENGINE_PROTOCOL_VERSION, type DiscoverReply, type EngineErrorBody, type EngineLoad } from './protocol';
