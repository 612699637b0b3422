/**
 * `unimoe engine`: the engine tier as a NATS service. It runs the dense units and routers (experts
 * in-process or on the pools), joins the queue group of its bundle's `generate` subject, accepts a
 * request when it has room (or declines it, leaving the queue group while full), encodes the request's
 * media, streams tokens, honours cancels, answers discovery and response_format checks. stop() is the
 * graceful SIGTERM: no new requests, the running ones finish (within a bound), then closed.
 */
import { randomUUID } from 'node:crypto';
import { readManifest } from '@unimoe/shared/bundle/load';
import { isEncoderKind, type Manifest } from '@unimoe/shared/bundle/manifest';
import { isRequestId, log, withRequestIds } from '@unimoe/shared/log';
import { connectNats } from '@unimoe/shared/runtime/nats-connect';
import { roleInboxPrefix, type NatsRole, type NatsSecurity } from '@unimoe/shared/runtime/nats-auth';
import { ENGINE_QUEUE, engineDiscoverSubject, engineReplicaSubject, engineSubject, wireModel } from '@unimoe/shared/wire/subjects';
import { checkSchema } from '../api/response-format';
import { ApiError } from '../api/errors';
import { openTokenizer } from '../cli/bundle-access';
import { resolveBundle } from '../cli/resolve-bundle';
import { errorBody } from '../engine-client/errors';
import { nodeNatsTransport } from '../engine-client/node-nats-transport';
import { decodeFrame, decodeJson, encodeJson, ENGINE_HEADERS, ENGINE_PROTOCOL_VERSION, type CancelMessage, type EngineLoad, type GenerateReply, type GrammarReply } from '../engine-client/protocol';
import type { TransportMsg } from '../engine-client/transport';
import { EngineUnavailableError } from '../engine/admission';
import { createEngine, type Engine } from '../engine/engine';
import { GrammarError, type OutputFormat } from '../grammar/output';
import { createXGrammar } from '../grammar/xgrammar';
import type { MediaLimits } from '../preprocess/limits';
import { openExperts, openMultimodal, type ServeOptions } from '../serve';
import { bundleFileServer, discoverReply } from './bundle-files';
import { QueueMembership } from './membership';
import { parseRequest, runRequest, type RunningRequest } from './request-runner';

export interface EngineServiceOptions {
  /** Bundle directory or s3:// URI. */
  bundle: string;
  /** The engine tier's NATS server: requests come in and tokens go out here. */
  natsUrl: string;
  natsSecurity?: NatsSecurity;
  /** Experts (and encoders, unless localEncoders) on the pools behind this NATS server instead of in-process. */
  poolsNatsUrl?: string;
  localEncoders?: boolean;
  /** As `serve`: batch size, prefill chunk, wait queue and KV budget (admission). */
  engine?: ServeOptions['engine'];
  dispatch?: ServeOptions['dispatch'];
  scaleFromZeroMs?: number;
  /** Encoder input checks (the edge decodes media; this is for the pipeline's shapes only). */
  media?: Partial<MediaLimits>;
  /** How often a running request hears from its engine (default 1000 ms); a client waits about 3 of them. */
  heartbeatMs?: number;
  /** Graceful stop: how long running requests may take to finish (default 30 s). */
  drainMs?: number;
  /** Default: engine-<8 hex>. */
  id?: string;
}

export interface EngineService {
  id: string;
  manifest: Manifest;
  load(): EngineLoad;
  /** Graceful: leaves the queue group, declines what still arrives, lets running requests finish (bounded), closes. */
  stop(): Promise<void>;
  /** At once: running requests fail. */
  close(): Promise<void>;
}

const ROLE: NatsRole = { kind: 'engine' };

export async function startEngineService(opts: EngineServiceOptions): Promise<EngineService> {
  const id = opts.id ?? `engine-${randomUUID().slice(0, 8)}`;
  const pools = opts.poolsNatsUrl;
  const encodersHere = !pools || opts.localEncoders === true;
  const bundleDir = await resolveBundle(opts.bundle, (u) => (u.kind === 'expert' ? !pools : isEncoderKind(u.kind) ? encodersHere : true));
  const manifest = await readManifest(bundleDir);
  const wire = wireModel(manifest);
  const cleanup: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn().catch((err: unknown) => log.error({ err }, 'error while closing the engine'));
  };
  try {
    const { experts } = await openExperts(bundleDir, manifest, pools, opts.natsSecurity, { ...opts.dispatch, scaleFromZeroMs: opts.scaleFromZeroMs }, ROLE);
    cleanup.push(() => experts.close());
    const engine: Engine = await createEngine({ bundleDir, experts, ...opts.engine });
    cleanup.push(() => engine.close());
    const { multimodal } = await openMultimodal(bundleDir, manifest, undefined, encodersHere ? undefined : pools, cleanup, opts.natsSecurity, opts.scaleFromZeroMs, opts.media, ROLE);
    const vocab = Math.min(manifest.config.vocab, manifest.tokenizer.vocabSize ?? manifest.config.vocab);
    const grammar = await createXGrammar(await openTokenizer(bundleDir, manifest), vocab, [manifest.tokenizer.eos]);
    cleanup.push(async () => grammar.dispose());
    const nc = await connectNats(opts.natsUrl, `unimoe-engine-${id}`, { role: ROLE, security: opts.natsSecurity });
    cleanup.push(() => nc.drain().catch(() => nc.close()));
    const t = nodeNatsTransport(nc, roleInboxPrefix(ROLE));

    let idle: (() => void) | undefined;
    const heartbeatMs = opts.heartbeatMs ?? 1000;
    /** Requests accepted and not finished (fetching, encoding, queued or generating). */
    const running = new Map<string, RunningRequest>();
    const capacity = (opts.engine?.maxBatch ?? 16) + (opts.engine?.maxWaiting ?? 256);
    const counts = { accepted: 0, declined: 0 };
    let stopping = false;
    const fullReason = () => (stopping ? 'the engine is stopping' : running.size >= capacity ? `all ${capacity} places (batch + queue) are taken` : engine.full());
    const runner = { t, engine, grammar, multimodal, heartbeatMs, fetchTimeoutMs: 10_000 };

    const reply = (m: TransportMsg, r: GenerateReply) => m.reply && t.publish(m.reply, encodeJson(r));
    const onGenerate = (m: TransportMsg) => {
      let req;
      let inline: Uint8Array;
      try {
        if (m.header(ENGINE_HEADERS.version) !== ENGINE_PROTOCOL_VERSION) throw new Error(`${ENGINE_HEADERS.version} ${m.header(ENGINE_HEADERS.version) ?? '(missing)'}: this engine speaks ${ENGINE_PROTOCOL_VERSION}`);
        const frame = decodeFrame<unknown>(m.data, 'generate request');
        req = parseRequest(frame.meta);
        inline = frame.bytes;
      } catch (err) {
        return reply(m, { type: 'error', error: errorBody(new ApiError(400, `Bad engine request: ${(err as Error).message}`, 'invalid_request_error')) });
      }
      const full = fullReason();
      if (full) {
        counts.declined++;
        refresh();
        return reply(m, { type: 'declined', engine: id, reason: full });
      }
      counts.accepted++;
      const entry: RunningRequest = { abort: new AbortController(), stopped: new Set() };
      running.set(req.id, entry);
      reply(m, { type: 'accepted', engine: id, heartbeatMs });
      refresh();
      // The API request's ids tag this engine's log lines about it, as they tag the edge's.
      const ids = Array.isArray(req.requestIds) && req.requestIds.every(isRequestId) && req.requestIds.length > 0 ? req.requestIds : [req.id];
      void withRequestIds(ids, () => runRequest(runner, req, inline, entry)).finally(() => {
        running.delete(req.id);
        refresh();
        if (running.size === 0) idle?.();
      });
    };
    /**
     * In the queue group exactly while there is room. The scheduler frees a slot (or KV budget) a little
     * after a generation resolves, so while out it looks again shortly instead of waiting for an event.
     */
    let recheck: ReturnType<typeof setTimeout> | undefined;
    const refresh = () => {
      const open = !fullReason();
      membership.set(open);
      if (!open && !stopping && !recheck) recheck = setTimeout(() => ((recheck = undefined), refresh()), 20);
    };
    const membership = new QueueMembership(t, engineSubject(wire, 'generate'), ENGINE_QUEUE, onGenerate);
    membership.set(true);
    cleanup.push(async () => clearTimeout(recheck));

    t.subscribe(engineReplicaSubject(wire, id, 'cancel'), (m) => {
      let c: CancelMessage;
      try {
        c = decodeJson<CancelMessage>(m.data, 'cancel');
      } catch (err) {
        return log.warn({ err }, 'ignored a malformed cancel message');
      }
      const entry = running.get(c?.id);
      if (!entry) return;
      if (Number.isInteger(c.choice)) entry.stopped.add(c.choice!);
      else entry.abort.abort();
    });
    const load = (): EngineLoad => {
      const s = engine.stats();
      return { engine: id, running: s.running, waiting: s.waiting, generatedTokens: s.generatedTokens, ...counts, active: running.size, open: membership.joined };
    };
    t.subscribe(engineReplicaSubject(wire, id, 'stats'), (m) => m.reply && t.publish(m.reply, encodeJson(load())));
    const discovery = discoverReply(id, wire.hash, manifest);
    t.subscribe(engineDiscoverSubject(manifest.name), (m) => m.reply && t.publish(m.reply, discovery), { queue: ENGINE_QUEUE });
    t.subscribe(engineSubject(wire, 'file'), bundleFileServer(t, bundleDir, manifest), { queue: ENGINE_QUEUE });
    t.subscribe(
      engineSubject(wire, 'grammar'),
      (m) => {
        if (!m.reply) return;
        const to = m.reply;
        void checkGrammar(m.data).then((r) => t.publish(to, encodeJson(r)));
      },
      { queue: ENGINE_QUEUE },
    );
    const checkGrammar = async (data: Uint8Array): Promise<GrammarReply> => {
      try {
        const format = decodeJson<OutputFormat>(data, 'response_format');
        if (format.type === 'json_schema') checkSchema(format.schema);
        await grammar.compile(format);
        return { ok: true };
      } catch (err) {
        if (err instanceof GrammarError) return { ok: false, grammarError: err.message };
        return { ok: false, error: errorBody(err instanceof ApiError ? err : new ApiError(400, (err as Error).message, 'invalid_request_error', 'response_format')) };
      }
    };
    await nc.flush();

    let stopped: Promise<void> | undefined;
    const drainMs = opts.drainMs ?? 30_000;
    return {
      id,
      manifest,
      load,
      stop: () =>
        (stopped ??= (async () => {
          stopping = true;
          membership.set(false);
          await nc.flush();
          if (running.size > 0) {
            const done = new Promise<void>((resolve) => (idle = resolve));
            const bound = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), drainMs).unref());
            if (!(await Promise.race([done.then(() => true), bound]))) {
              log.warn(`${running.size} requests still running after ${drainMs} ms: stopping them`);
              await engine.close(new EngineUnavailableError('The engine is shutting down; the request was stopped before it finished. Please retry.', 1));
              await done;
            }
          }
          await closeAll();
        })()),
      close: async () => {
        stopping = true;
        membership.set(false);
        await engine.close(new EngineUnavailableError('The engine was closed; the request was stopped before it finished. Please retry.', 1));
        await closeAll();
      },
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
