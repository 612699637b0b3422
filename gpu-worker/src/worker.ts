/**
 * One replica of one pool: loads its units (experts and/or modality encoders) from the model store
 * (sha256-verified), answers each unit's NATS subject in the unit's queue group, coalesces concurrent
 * batches per unit, publishes load statistics, and drains cleanly on stop().
 */
import { headers as natsHeaders, type Msg, type NatsConnection, type Subscription } from 'nats';
import { randomBytes } from 'node:crypto';
import { unitName, type UnitSpec } from '@unimoe/shared/bundle/manifest';
import { readFile } from 'node:fs/promises';
import { loadUnitSession } from '@unimoe/shared/runtime/ort-unit';
import { ExpertGroup, type ExpertUnitSource } from '@unimoe/shared/runtime/expert-group';
import { openModelStore } from '@unimoe/shared/store/store';
import {
  decodeTensorMessage,
  encodeErrorReply,
  encodeTensorMessage,
  WIRE_HEADERS,
  WireError,
  type WireMessage,
} from '@unimoe/shared/wire/format';
import { expertGroupName, replicaUnitSubject, statsSubject, unitQueueGroup, unitSubject, wireModel, type WireModel } from '@unimoe/shared/wire/subjects';
import { decodeGroupRequest, encodeGroupReply } from '@unimoe/shared/wire/group-format';
import { readDeadline } from '@unimoe/shared/wire/deadline';
import { Coalescer, DroppedWork, RunClock, sessionRun } from './coalescer';
import { EncoderRequests } from './encoder-requests';
import { addWorkerService } from './service';
import { LoadCounters, type StatsMessage } from './stats';
import { formatIndexList } from '@unimoe/shared/index-list';
import { selectEncoderUnits, selectExpertUnits, type EncoderName } from './units';
import { connectNats } from '@unimoe/shared/runtime/nats-connect';
import { log as logger, parseTraceHeader, TRACE_HEADER, withRequestIds } from '@unimoe/shared/log';
import type { NatsSecurity } from '@unimoe/shared/runtime/nats-auth';
import { NatsConnectionWatch } from '@unimoe/shared/runtime/nats-status';

export interface WorkerOptions {
  /** Bundle directory or s3://bucket/prefix. */
  store: string;
  pool: string;
  /** Expert indices to host (on `layers`); optional when `encoders` are given. */
  experts?: number[];
  /** Default: every layer. */
  layers?: number[];
  /** Modality encoder units to host by kind: `vision` (CLIP), `speech` (Whisper), `audio` (BEATs). */
  encoders?: EncoderName[];
  natsUrl: string;
  /** Credentials and TLS; default: from the environment (shared/src/runtime/nats-auth.ts). */
  natsSecurity?: NatsSecurity;
  /** Replica id (NATS service metadata, stats); default `<pool>-<random>`. Drivers set it to find their replicas again. */
  replica?: string;
  /** How often load statistics are published; default 5000. */
  statsIntervalMs?: number;
  /** The sliding window `$SRV.STATS` reports load over; default 10000. */
  statsWindowMs?: number;
  /** Bound on rows coalesced into one onnxruntime run; default 4096. */
  maxRowsPerRun?: number;
  /** Bound on expert rows waiting per unit (beyond it: `overloaded`); default 8 x maxRowsPerRun. */
  maxQueuedRows?: number;
  /** Bound on encoder items (images, frames, speech and audio chunks) coalesced into one run; default 16. */
  maxItemsPerRun?: number;
  /** onnxruntime intra-op threads per unit session. */
  threads?: number;
  executionProvider?: 'cpu' | 'cuda';
  /** Cache for units fetched from S3. */
  cacheDir?: string;
  /**
   * stop() gives up draining after this long (e.g. nats-server unreachable, so nothing can be answered)
   * and closes the connection; default 10000 ms.
   */
  drainTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface RunningWorker {
  model: string;
  pool: string;
  /** Replica id, also in every stats message. */
  replica: string;
  units: string[];
  executionProvider: 'cpu' | 'cuda';
  /** Stops taking requests, finishes and answers the ones in flight, then disconnects; bounded by drainTimeoutMs. */
  stop(): Promise<void>;
  /** Resolves when the NATS connection is closed: undefined after stop(), the reason when it was lost for good. */
  closed: Promise<Error | undefined>;
}

interface HostedUnit {
  spec: UnitSpec;
  /** Experts: their layer group's coalescer (shared by the group's units); encoders: their own. */
  coalescer: Coalescer;
  /** Encoders only: output dims after the item axis ([tokens, H]). */
  outItemDims?: number[];
  /** Experts only: the layer group that also serves the unit. */
  group?: HostedGroup;
}

/** One layer's hosted experts as one session, answering layer-group requests (and its units' own). */
interface HostedGroup {
  name: string;
  layer: number;
  experts: number[];
  coalescer: Coalescer;
}

/** What a worker loaded: its units, its layer groups, and how to free their sessions. */
interface Loaded {
  hosted: HostedUnit[];
  groups: HostedGroup[];
  executionProvider: 'cpu' | 'cuda';
  release: () => Promise<void>;
}

/** Loads everything first and joins NATS only when every unit verified and loaded (or throws why not). */
export async function runWorker(opts: WorkerOptions): Promise<RunningWorker> {
  const log = opts.log ?? ((line: string) => logger.info({ pool: opts.pool }, line));
  const store = await openModelStore(opts.store, { cacheDir: opts.cacheDir });
  const releases: Array<() => Promise<void>> = [];
  const release = () => Promise.all(releases.map((r) => r())).then(() => undefined);
  try {
    const manifest = await store.readManifest();
    const encoders = opts.encoders ?? [];
    if (!opts.experts && encoders.length === 0) throw new Error('nothing to host: give experts, encoders or both');
    if (!opts.experts && opts.layers) throw new Error('layers were given without experts');
    const encoderSpecs = selectEncoderUnits(manifest, encoders);
    const expertSpecs = opts.experts ? selectExpertUnits(manifest, opts.experts, opts.layers) : [];
    const specs = [...expertSpecs, ...encoderSpecs];
    const paths = new Map<UnitSpec, string>();
    for (const spec of specs) paths.set(spec, await store.unitPath(spec)); // sha256-verified, before any session loads
    const counters = new LoadCounters(specs.map((s) => s.name), opts.statsWindowMs);
    const hidden = manifest.config.hidden;
    const clock = new RunClock();
    const sessionOpts = { threads: opts.threads, executionProvider: opts.executionProvider };
    const hosted: HostedUnit[] = [];
    const groups: HostedGroup[] = [];
    let executionProvider: 'cpu' | 'cuda' | undefined;

    // Experts: each layer's hosted experts merged into one session (one run per layer-group request).
    const byLayer = new Map<number, UnitSpec[]>();
    for (const spec of expertSpecs) byLayer.set(spec.layer!, [...(byLayer.get(spec.layer!) ?? []), spec]);
    for (const [layer, layerSpecs] of byLayer) {
      const experts = layerSpecs.map((s) => s.expert!);
      const name = expertGroupName(layer, experts);
      const units: ExpertUnitSource[] = [];
      for (const spec of layerSpecs) units.push({ expert: spec.expert!, name: spec.name, model: await readFile(paths.get(spec)!), input: spec.inputs[0]!.name, output: spec.outputs[0]!.name });
      const group = await ExpertGroup.load(name, units, hidden, sessionOpts);
      releases.push(() => group.release());
      executionProvider ??= group.executionProvider;
      const expertOf = new Map(layerSpecs.map((s) => [s.name, s.expert!]));
      const coalescer = new Coalescer({
        label: name,
        units: layerSpecs.map((s) => s.name),
        execute: (parts) => group.run(parts.map((p) => ({ expert: expertOf.get(p.unit)!, x: p.x, rows: p.rows }))),
        inRowSize: hidden,
        outRowSize: hidden,
        maxRowsPerRun: opts.maxRowsPerRun ?? 4096,
        maxQueuedRows: opts.maxQueuedRows,
        counters,
        clock,
      });
      const hostedGroup = { name, layer, experts, coalescer };
      groups.push(hostedGroup);
      for (const spec of layerSpecs) hosted.push({ spec, coalescer, group: hostedGroup });
    }

    for (const spec of encoderSpecs) {
      const session = await loadUnitSession(paths.get(spec)!, sessionOpts);
      releases.push(() => session.release());
      executionProvider ??= session.executionProvider;
      const inputName = spec.inputs[0]?.name ?? session.inputNames[0];
      const outputName = spec.outputs[0]?.name ?? session.outputNames[0];
      if (!session.inputNames.includes(inputName) || !session.outputNames.includes(outputName)) {
        throw new Error(`unit ${spec.name}: the ONNX file has inputs [${session.inputNames}] and outputs [${session.outputNames}], the manifest says ${inputName} -> ${outputName}`);
      }
      // selectEncoderUnits checked that every axis after the item axis is a fixed number.
      const inRowDims = spec.inputs[0]!.shape.slice(1) as number[];
      const outItemDims = spec.outputs[0]!.shape.slice(1) as number[];
      const coalescer = new Coalescer({
        label: spec.name,
        units: [spec.name],
        execute: sessionRun(session, inputName, outputName, inRowDims),
        inRowSize: inRowDims.reduce((a, b) => a * b, 1),
        outRowSize: outItemDims.reduce((a, b) => a * b, 1),
        maxRowsPerRun: opts.maxItemsPerRun ?? 16,
        counters,
        clock,
      });
      hosted.push({ spec, coalescer, outItemDims });
    }
    return await join(opts, wireModel(manifest), hidden, { hosted, groups, executionProvider: executionProvider!, release }, counters, log);
  } catch (err) {
    await release();
    throw err;
  } finally {
    store.close();
  }
}

async function join(
  opts: WorkerOptions,
  wire: WireModel,
  hidden: number,
  loaded: Loaded,
  counters: LoadCounters,
  log: (line: string) => void,
): Promise<RunningWorker> {
  const model = wire.name;
  // Reconnect forever: a NATS restart must not take a pool down.
  const nc: NatsConnection = await connectNats(opts.natsUrl, `unimoe-worker-${opts.pool}`, { role: { kind: 'worker', pool: opts.pool }, security: opts.natsSecurity });
  const replica = opts.replica ?? `${opts.pool}-${randomBytes(4).toString('hex')}`;
  new NatsConnectionWatch(nc, `unimoe worker ${replica}`, log); // logs disconnects and reconnects
  const { hosted, groups, executionProvider } = loaded;
  const subs: Subscription[] = [];
  const encoderRequests = new EncoderRequests(nc, log);

  for (const unit of hosted) {
    const subject = unitSubject(wire, unit.spec.name);
    const { spec, coalescer, outItemDims } = unit;
    const callback = (err: Error | null, msg: Msg) => {
      if (err) return log(`[unimoe worker] subscription ${subject}: ${err.message}`);
      // The edge's request ids ride along, so this worker's log lines about the message name them.
      withRequestIds(parseTraceHeader(msg.headers?.get(TRACE_HEADER)), () => {
        logger.debug({ unit: spec.name, bytes: msg.data.length }, 'unit request');
        if (outItemDims) encoderRequests.handle(msg, { spec, coalescer, outItemDims });
        else handle(msg, unit, hidden, replica);
      });
    };
    subs.push(nc.subscribe(subject, { queue: unitQueueGroup(wire, unit.spec.name), callback }));
    // Experts also answer on this replica's own subject, where the edge re-sends work it suspects
    // another replica of holding (dead or stopped).
    if (!outItemDims) subs.push(nc.subscribe(replicaUnitSubject(wire, replica, unit.spec.name), { callback }));
  }
  // Layer groups: one request for all of a layer's hosted experts (shared subject + this replica's own).
  for (const group of groups) {
    const callback = (err: Error | null, msg: Msg) => {
      if (err) return log(`[unimoe worker] subscription ${group.name}: ${err.message}`);
      withRequestIds(parseTraceHeader(msg.headers?.get(TRACE_HEADER)), () => {
        logger.debug({ group: group.name, bytes: msg.data.length }, 'group request');
        handleGroup(msg, group, hidden, replica);
      });
    };
    subs.push(nc.subscribe(unitSubject(wire, group.name), { queue: unitQueueGroup(wire, group.name), callback }));
    subs.push(nc.subscribe(replicaUnitSubject(wire, replica, group.name), { callback }));
  }
  const service = await addWorkerService(
    nc,
    {
      model: wire,
      pool: opts.pool,
      replica,
      units: hosted.map((h) => h.spec.name),
      experts: opts.experts ? formatIndexList(opts.experts) : '',
      layers: opts.layers ? formatIndexList(opts.layers) : '',
      encoders: (opts.encoders ?? []).join(','),
      executionProvider,
    },
    counters,
  );
  await nc.flush(); // subscriptions are live on the server before we report ready

  const publishStats = () => {
    const { intervalMs, units } = counters.take();
    const msg: StatsMessage = { model, pool: opts.pool, replica, executionProvider, intervalMs, at: new Date().toISOString(), units };
    if (!nc.isClosed()) nc.publish(statsSubject(wire, opts.pool), JSON.stringify(msg));
  };
  const statsTimer = setInterval(publishStats, opts.statsIntervalMs ?? 5000);
  statsTimer.unref();

  log(
    `[unimoe worker] pool ${opts.pool} replica ${replica}: ${hosted.length} units of model ${model} ` +
      `(${hosted.map((h) => h.spec.name).join(', ')}) on execution provider ${executionProvider}, NATS ${opts.natsUrl}`,
  );

  const drain = async () => {
    await service.stop().catch(() => undefined); // leaves $SRV discovery first: the autoscaler stops counting this replica
    await Promise.all(subs.map((s) => s.drain())); // no new requests reach this replica
    await encoderRequests.idle(); // encoder requests still pulling parts get them, run and are answered
    await Promise.all(hosted.map((h) => h.coalescer.idle())); // in-flight work finishes and is answered (groups included)
    publishStats();
    await nc.drain(); // flushes the replies, then closes
    await loaded.release();
  };
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      clearInterval(statsTimer);
      const bound = opts.drainTimeoutMs ?? 10_000;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const drained = await Promise.race([
        drain().then(
          () => true,
          (err: Error) => (log(`[unimoe worker] pool ${opts.pool} replica ${replica}: drain failed: ${err.message}`), false),
        ),
        new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), bound))),
      ]);
      clearTimeout(timer);
      if (drained) log(`[unimoe worker] pool ${opts.pool} replica ${replica}: drained and stopped`);
      // Draining needs the server (unsubscribe, flush the replies); without it, stop anyway.
      else log(`[unimoe worker] pool ${opts.pool} replica ${replica}: could not drain within ${bound} ms (is NATS reachable?); closing without answering the rest`);
      // A drain that ran while disconnected can resolve with the client still reconnecting: close it for good.
      if (!nc.isClosed()) await nc.close();
    })());

  return {
    model,
    pool: opts.pool,
    replica,
    units: hosted.map((h) => h.spec.name),
    executionProvider,
    stop,
    closed: nc.closed().then((err) => (stopping ? undefined : (err ?? new Error('NATS connection closed')))),
  };
}

/** Answers one request; malformed input or a failed run becomes an error reply, never a throw. */
function handle(msg: Msg, unit: HostedUnit, hidden: number, replica: string): void {
  let requestId: string | undefined;
  try {
    requestId = msg.headers?.get(WIRE_HEADERS.requestId) || undefined;
    const expiresAt = readDeadline(msg.headers);
    const t = decodeTensorMessage(msg.headers, msg.data, { hidden });
    if (t.rows === 0) {
      reply(msg, encodeTensorMessage({ ...t, data: new Float32Array(0) })); // readiness ping
      return;
    }
    unit.coalescer.submit(t.data, t.rows, expiresAt, unit.spec.name).then(
      ({ y, computeUs }) => {
        const m = encodeTensorMessage({ dtype: t.dtype, rows: t.rows, hidden, data: y, requestId });
        m.headers[WIRE_HEADERS.computeUs] = String(computeUs);
        m.headers[WIRE_HEADERS.replica] = replica;
        // Tells the edge it may send this layer's experts here as one group request from now on.
        if (unit.group) m.headers[WIRE_HEADERS.group] = unit.group.name;
        reply(msg, m);
      },
      (err: Error) =>
        reply(msg, err instanceof DroppedWork ? encodeErrorReply(err.code, err.message, requestId) : encodeErrorReply('internal', `unit ${unit.spec.name}: ${err.message}`, requestId)),
    );
  } catch (err) {
    if (err instanceof WireError) reply(msg, encodeErrorReply(err.code, err.message, requestId));
    else reply(msg, encodeErrorReply('internal', `unit ${unit.spec.name}: ${(err as Error).message}`, requestId));
  }
}

/** Answers one layer-group request: every expert's rows in one coalesced run. */
function handleGroup(msg: Msg, group: HostedGroup, hidden: number, replica: string): void {
  let requestId: string | undefined;
  try {
    requestId = msg.headers?.get(WIRE_HEADERS.requestId) || undefined;
    const expiresAt = readDeadline(msg.headers);
    const req = decodeGroupRequest(msg.headers, msg.data, { hidden, experts: group.experts });
    group.coalescer.submitParts(req.experts.map((e) => ({ unit: unitName.expert(group.layer, e.expert), x: e.x, rows: e.rows })), expiresAt).then(
      ({ ys, computeUs }) => {
        const m = encodeGroupReply(req.dtype, hidden, req.experts.map((e, i) => ({ expert: e.expert, y: ys[i]! })), requestId);
        m.headers[WIRE_HEADERS.computeUs] = String(computeUs);
        m.headers[WIRE_HEADERS.replica] = replica;
        reply(msg, m);
      },
      (err: Error) =>
        reply(msg, err instanceof DroppedWork ? encodeErrorReply(err.code, err.message, requestId) : encodeErrorReply('internal', `group ${group.name}: ${err.message}`, requestId)),
    );
  } catch (err) {
    if (err instanceof WireError) reply(msg, encodeErrorReply(err.code, err.message, requestId));
    else reply(msg, encodeErrorReply('internal', `group ${group.name}: ${(err as Error).message}`, requestId));
  }
}

function reply(msg: Msg, m: WireMessage): void {
  if (!msg.reply) return; // a publish without a reply subject gets no answer
  const error = m.headers[WIRE_HEADERS.error];
  if (error) logger.warn({ subject: msg.subject, error }, 'error reply');
  try {
    const h = natsHeaders();
    for (const [k, v] of Object.entries(m.headers)) h.set(k, v);
    msg.respond(m.body, { headers: h });
  } catch (err) {
    logger.error({ subject: msg.subject, err }, 'could not reply');
    // e.g. a reply over the server's max_payload: say so (small) rather than leave the sender waiting.
    if (!error) reply(msg, encodeErrorReply('internal', `could not send the reply: ${(err as Error).message}`, m.headers[WIRE_HEADERS.requestId]));
  }
}
