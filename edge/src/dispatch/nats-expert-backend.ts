/**
 * Split mode's ExpertBackend: a layer's batches go to the pools that host them, answered by whichever
 * replica of the pool (queue group). A pool's replies name the layer group it serves (the experts it
 * hosts on that layer); from then on the layer's batches for that pool travel as one group message
 * (each step row once, docs/wire.md), and batches no known group covers go as one message per
 * (layer, expert) to the unit's own subject (also the fallback when a group stops answering, and what
 * scale from zero starts from). Expert FFNs are pure, so a request that a dead, stopped or overloaded
 * replica does not answer in a few of its usual round trips is sent again (reliable-request.ts): a
 * replica dying costs a few step times, not a timeout.
 */
import { headers as natsHeaders, type Msg, type NatsConnection } from 'nats';
import { unitName } from '@unimoe/shared/bundle/manifest';
import { decodeTensorMessage, encodeTensorMessage, readErrorReply, WIRE_DTYPE_BYTES, WIRE_HEADERS, WireError, type WireDType, type WireMessage } from '@unimoe/shared/wire/format';
import { decodeGroupReply, encodeGroupRequestRows } from '@unimoe/shared/wire/group-format';
import { HEADER_ALLOWANCE_BYTES, maxRowsPerMessage, rowRanges } from '@unimoe/shared/wire/split';
import { allStatsSubject, expertGroupsOfUnits, parseExpertGroupName, replicaUnitSubject, unitSubject, type WireModel } from '@unimoe/shared/wire/subjects';
import { assembleGroupReplies, planGroupRows, planGroups, sliceGroupRows, writeGroupRows, type GroupRows, type GroupSlice } from './layer-groups';
import type { ExpertBackend, ExpertBatch } from '../engine/expert-backend';
import { connectNats } from '@unimoe/shared/runtime/nats-connect';
import type { NatsRole, NatsSecurity } from '@unimoe/shared/runtime/nats-auth';
import { TRACE_HEADER, traceHeaderValue } from '@unimoe/shared/log';
import { drainWithin, NatsConnectionWatch } from '@unimoe/shared/runtime/nats-status';
import { LatencyTracker, type LatencyOptions } from './latency';
import { reliableRequest, RequestFailed } from './reliable-request';
import { ReplicaTracker } from './replicas';
import { waitForReplicaOnDemand } from './scale-from-zero';

export interface NatsExpertBackendOptions {
  natsUrl: string;
  /** Credentials and TLS; default: from the environment (shared/src/runtime/nats-auth.ts). */
  natsSecurity?: NatsSecurity;
  /** Whose NATS permissions (inbox prefix) the connection uses: the edge's (default) or an engine's (`unimoe engine --pools`). */
  role?: NatsRole;
  /** The bundle's name and hash (`wireModel(manifest)`; part of every subject). */
  model: WireModel;
  hidden: number;
  /** Budget of each batch, every re-send and reconnect wait included; default 10000 ms. */
  timeoutMs?: number;
  /** "No responders" retries (outside a NATS reconnect) before a unit never answered counts as hosted by nobody; default 2. */
  retries?: number;
  /** Most messages sent for one batch (first send, hedges, retries); default 6. */
  maxAttempts?: number;
  /** When to re-send an unanswered batch, from the unit's observed round trips. */
  hedging?: LatencyOptions;
  /**
   * How long a batch for a unit that has answered before waits out "no responders" (its pool
   * restarting) before failing; default 10000 ms (capped by timeoutMs). Units never answered fail fast.
   */
  restartHoldMs?: number;
  /** Element type on the wire; default f32 (exact). f16/bf16 halve the bytes and round. */
  dtype?: WireDType;
  /** Split batches above this many payload bytes; default (and at most) the server's max_payload. */
  maxPayload?: number;
  /** Called for every answered request (metrics, benchmarks); must be cheap. */
  observe?: (reply: ReplyObservation) => void;
  /** Scale from zero: on "no responders", signal demand and hold the batch up to this long for a replica (default off). */
  scaleFromZeroMs?: number;
  /** Send a layer's batches for one pool as one layer-group message once the pool names its group (default true). */
  layerGroups?: boolean;
}

/** One answered request, as seen by the edge. */
export interface ReplyObservation {
  /** The unit, or the layer group (`layer0.experts.0-3`), the request went to. */
  unit: string;
  /** Rows computed: (expert, row) pairs for a group request. */
  rows: number;
  requestBytes: number;
  replyBytes: number;
  /** From sending the request to having its reply (this attempt). */
  roundTripMs: number;
  /** The worker's own onnxruntime time for the batch, when the reply says (Unimoe-Compute-Us). */
  computeUs?: number;
}

export interface UnitsAvailability {
  available: string[];
  missing: string[];
}

/** Counters since the backend was created (for metrics and failover checks). */
export interface DispatchStats {
  /** NATS requests sent, hedges and retries included. */
  requests: number;
  /** Re-sends of a batch still unanswered after its unit's hedge delay (e.g. its replica died or stopped). */
  hedges: number;
  /** Batches that got no reply within their whole budget. */
  timeouts: number;
  /** Attempts that found nobody subscribed to the unit. */
  noResponders: number;
}

/** This connection's traffic since it opened, as counted by the NATS client (payload and header bytes). */
export interface WireStats {
  inMsgs: number;
  outMsgs: number;
  inBytes: number;
  outBytes: number;
}

export interface NatsExpertBackend extends ExpertBackend {
  /** Readiness probe: pings each unit's subject with an empty batch. */
  unitsAvailable(units: string[], timeoutMs?: number): Promise<UnitsAvailability>;
  stats(): DispatchStats;
  wireStats(): WireStats;
}

/** A batch that could not be computed; names the unit and says why. */
export class ExpertDispatchError extends Error {
  constructor(
    readonly unit: string,
    readonly reason: 'no-responders' | 'timeout' | 'error-reply' | 'bad-reply' | 'nats' | 'disconnected' | 'overloaded',
    message: string,
  ) {
    super(message);
    this.name = 'ExpertDispatchError';
  }
}

/** How long a layer group that found nobody subscribed is left alone before its announcements count again. */
const GROUP_RETRY_MS = 10_000;

export async function createNatsExpertBackend(opts: NatsExpertBackendOptions): Promise<NatsExpertBackend> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const retries = opts.retries ?? 2;
  const maxAttempts = opts.maxAttempts ?? 6;
  const restartHoldMs = opts.restartHoldMs ?? 10_000;
  const dtype = opts.dtype ?? 'f32';
  const { hidden, model } = opts;
  const nc: NatsConnection = await connectNats(opts.natsUrl, 'unimoe-edge', { role: opts.role ?? { kind: 'edge' }, security: opts.natsSecurity });
  const watch = new NatsConnectionWatch(nc, 'unimoe edge');
  const latency = new LatencyTracker(opts.hedging);
  const serverMax = nc.info?.max_payload ?? 1024 * 1024;
  const maxPayload = Math.min(opts.maxPayload ?? serverMax, serverMax);
  const maxRows = maxRowsPerMessage(maxPayload, hidden, dtype);
  let nextId = 0;
  const counters: DispatchStats = { requests: 0, hedges: 0, timeouts: 0, noResponders: 0 };
  /** Units some replica has answered: "no responders" for them means a restart, worth waiting out. */
  const answered = new Set<string>();
  const replicas = new ReplicaTracker();
  const observe = opts.observe;
  const waitForReplica = waitForReplicaOnDemand(nc, model, opts.scaleFromZeroMs);

  /** Layer -> the layer groups replicas have announced (name -> its experts), see learnGroup. */
  const groups = new Map<number, Map<string, number[]>>();
  /** Groups that found nobody subscribed, and until when their announcements are ignored. */
  const silentGroups = new Map<string, number>();

  /**
   * Sends one message to `key`'s subject (a unit, or a layer group: both are "units" to subjects,
   * latency, replicas) with re-sends; returns the reply after observing it. Units nobody serves ask for a
   * replica (scale from zero); groups do not: the caller falls back to their units. `callRows`: the rows
   * of the whole call this message is part of (what the replica computes; its hedge delay depends on it).
   */
  const request = async (key: string, message: WireMessage, rows: number, group: boolean, callRows: number): Promise<Msg> => {
    const subject = unitSubject(model, key);
    const trace = traceHeaderValue();
    const send = () =>
      reliableRequest({
        nc,
        watch,
        subject,
        body: message.body,
        headers: trace ? { ...message.headers, [TRACE_HEADER]: trace } : message.headers,
        budgetMs: timeoutMs,
        hedgeAfterMs: latency.hedgeAfterMs(key, callRows),
        maxAttempts,
        noResponderRetries: group ? 0 : retries,
        noResponderHoldMs: !group && answered.has(key) ? restartHoldMs : 0,
        resendTo: () => {
          const replica = replicas.liveliest(key);
          return replica === undefined ? undefined : { subject: replicaUnitSubject(model, replica, key), onGone: () => replicas.forget(replica) };
        },
        onSend: (kind) => {
          counters.requests++;
          if (kind === 'hedge') counters.hedges++;
        },
        onFailure: (kind) => (kind === 'timeout' ? counters.timeouts++ : counters.noResponders++),
      });
    let answer;
    try {
      try {
        answer = await send();
      } catch (err) {
        // Scale from zero: nobody serves the unit, so ask the autoscaler for a replica, hold, then send again.
        if (group || !(err instanceof RequestFailed && err.reason === 'no-responders' && (await waitForReplica(key, async () => (await unitsAvailable([key], 1000)).missing.length === 0)))) throw err;
        answer = await send();
      }
    } catch (err) {
      if (!(err instanceof RequestFailed)) throw err;
      const message =
        err.reason === 'no-responders'
          ? `no worker hosts unit ${key} (nobody answers ${subject}; is a pool serving it running?)`
          : `unit ${key}: no usable reply on ${subject}: ${err.message}`;
      throw new ExpertDispatchError(key, err.reason, message);
    }
    const { msg: reply, sentAt } = answer;
    const roundTripMs = performance.now() - sentAt;
    latency.observe(key, roundTripMs, callRows);
    answered.add(key);
    const replica = reply.headers?.get(WIRE_HEADERS.replica);
    if (replica) replicas.answered(key, replica);
    const error = readErrorReply(reply.headers);
    if (error) throw new ExpertDispatchError(key, 'error-reply', `unit ${key}: worker refused the batch: ${error.code} ${error.message}`);
    if (observe) {
      const compute = Number(reply.headers?.get(WIRE_HEADERS.computeUs));
      observe({
        unit: key,
        rows,
        requestBytes: message.body.byteLength,
        replyBytes: reply.data.byteLength,
        roundTripMs,
        ...(Number.isFinite(compute) && compute > 0 ? { computeUs: compute } : {}),
      });
    }
    return reply;
  };

  const learnGroup = (name: string) => {
    const parsed = parseExpertGroupName(name);
    if (!parsed || opts.layerGroups === false || (silentGroups.get(name) ?? 0) > performance.now()) return;
    const known = groups.get(parsed.layer) ?? groups.set(parsed.layer, new Map()).get(parsed.layer)!;
    known.set(name, parsed.experts);
  };
  // Groups are learned from unit replies (Unimoe-Group: at once) and from every pool's stats messages,
  // which list the replica's units (so a new replica's group, e.g. a hot expert's, gets its share).
  const statsSub = nc.subscribe(allStatsSubject(model), {
    callback: (err, msg) => {
      if (err) return;
      try {
        const units = (msg.json() as { units?: Record<string, unknown> }).units;
        if (units && typeof units === 'object') for (const name of expertGroupsOfUnits(Object.keys(units))) learnGroup(name);
      } catch {
        // not a stats message of ours: nothing to learn
      }
    },
  });

  const requestOnce = async (unit: string, x: Float32Array, rows: number, layer: number, expert: number, callRows: number): Promise<Float32Array> => {
    const message = encodeTensorMessage({ dtype, rows, hidden, data: x, requestId: `${unit}-${(nextId++).toString(36)}` });
    const reply = await request(unit, message, rows, false, callRows);
    const group = reply.headers?.get(WIRE_HEADERS.group);
    const parsed = group ? parseExpertGroupName(group) : undefined;
    if (parsed?.layer === layer && parsed.experts.includes(expert)) learnGroup(group!);
    return decodeReply(unit, reply, rows);
  };

  const decodeReply = (unit: string, reply: Msg, rows: number): Float32Array => {
    try {
      return decodeTensorMessage(reply.headers, reply.data, { hidden, rows }).data;
    } catch (err) {
      if (err instanceof WireError) throw new ExpertDispatchError(unit, 'bad-reply', `unit ${unit}: malformed reply: ${err.message}`);
      throw err;
    }
  };

  /** Readiness probe: each unit's subject gets an empty [0, hidden] batch; a replica answers it at once. */
  const unitsAvailable = async (units: string[], probeTimeoutMs = Math.min(timeoutMs, 2000)): Promise<UnitsAvailability> => {
    const ping = encodeTensorMessage({ dtype, rows: 0, hidden, data: new Float32Array(0) });
    const h = natsHeaders();
    for (const [k, v] of Object.entries(ping.headers)) h.set(k, v);
    const answered = await Promise.all(
      units.map((unit) =>
        nc.request(unitSubject(model, unit), ping.body, { timeout: probeTimeoutMs, headers: h }).then(
          (reply) => !readErrorReply(reply.headers),
          () => false,
        ),
      ),
    );
    return { available: units.filter((_, i) => answered[i]), missing: units.filter((_, i) => !answered[i]) };
  };

  const runBatch = async (b: ExpertBatch): Promise<Float32Array> => {
    const unit = unitName.expert(b.layer, b.expert);
    if (b.tokens <= maxRows) return b.tokens === 0 ? new Float32Array(0) : requestOnce(unit, b.x, b.tokens, b.layer, b.expert, b.tokens);
    const out = new Float32Array(b.tokens * hidden);
    await Promise.all(
      rowRanges(b.tokens, maxRows).map(async ([start, end]) => {
        const y = await requestOnce(unit, b.x.subarray(start * hidden, end * hidden), end - start, b.layer, b.expert, b.tokens);
        out.set(y, start * hidden);
      }),
    );
    return out;
  };

  /**
   * The batches of one layer group: each distinct step row once, the batches as row indices, in one
   * message or, above the server's max payload, in several (runs of rows, sent together, the replies
   * put back in token order). Undefined when the group is gone (nobody answers it any more) or one row
   * alone would not fit a message: the caller sends the batches to their units.
   */
  const runGroup = async (name: string, batches: ExpertBatch[]): Promise<Float32Array[] | undefined> => {
    const plan = planGroupRows(batches);
    const slices = sliceGroupRows(plan, { rowBytes: hidden * WIRE_DTYPE_BYTES[dtype], maxBytes: maxPayload - HEADER_ALLOWANCE_BYTES });
    if (!slices) return undefined;
    const pairs = slices.reduce((n, s) => n + s.pairs, 0);
    let replies;
    try {
      replies = await Promise.all(slices.map((s, i) => runGroupSlice(name, batches, plan, s, pairs, slices.length > 1 ? ` (message ${i + 1} of ${slices.length})` : '')));
    } catch (err) {
      if (!(err instanceof ExpertDispatchError && err.reason === 'no-responders')) throw err;
      // Its pool is gone or restarting, or its replicas may not subscribe to it: use the units for a while.
      groups.get(batches[0]!.layer)?.delete(name);
      silentGroups.set(name, performance.now() + GROUP_RETRY_MS);
      return undefined;
    }
    return assembleGroupReplies(slices, replies, batches.map((b) => b.tokens), hidden);
  };

  /** One group message: the slice's rows (gathered from the batches into the body) and its pairs; its experts' output rows. */
  const runGroupSlice = async (name: string, batches: ExpertBatch[], plan: GroupRows, slice: GroupSlice, callRows: number, which: string): Promise<Float32Array[]> => {
    const message = encodeGroupRequestRows({
      dtype,
      hidden,
      rows: slice.end - slice.start,
      writeRows: (out) => writeGroupRows(batches, plan, slice.start, slice.end, hidden, out),
      experts: slice.experts.map((e) => ({ expert: e.expert, rows: e.rows })),
      requestId: `${name}-${(nextId++).toString(36)}`,
    });
    const reply = await request(name, message, slice.pairs, true, callRows);
    try {
      return decodeGroupReply(reply.headers, reply.data, { hidden, experts: slice.experts.map((e) => [e.expert, e.rows.length] as const) });
    } catch (err) {
      if (err instanceof WireError) throw new ExpertDispatchError(name, 'bad-reply', `group ${name}: malformed reply${which}: ${err.message}`);
      throw err;
    }
  };

  /** A layer's batches: one message per known layer group covering some of them, the rest one per unit. */
  const runLayer = async (batches: ExpertBatch[]): Promise<Float32Array[]> => {
    const ys: Float32Array[] = new Array(batches.length);
    const plan = planGroups(groups.get(batches[0]!.layer), batches);
    await Promise.all([
      ...plan.groups.map(async ({ name, indices }) => {
        const out = await runGroup(name, indices.map((i) => batches[i]!));
        if (out) indices.forEach((i, k) => (ys[i] = out[k]!));
        else await Promise.all(indices.map(async (i) => (ys[i] = await runBatch(batches[i]!))));
      }),
      ...plan.rest.map(async (i) => (ys[i] = await runBatch(batches[i]!))),
    ]);
    return ys;
  };

  const runExperts = async (batches: ExpertBatch[]): Promise<Float32Array[]> => {
    for (const b of batches) {
      if (b.x.length !== b.tokens * hidden) {
        throw new RangeError(`batch for ${unitName.expert(b.layer, b.expert)} has ${b.x.length} values, ${b.tokens} tokens x hidden ${hidden} needs ${b.tokens * hidden}`);
      }
    }
    const byLayer = new Map<number, number[]>();
    batches.forEach((b, i) => byLayer.set(b.layer, [...(byLayer.get(b.layer) ?? []), i]));
    const ys: Float32Array[] = new Array(batches.length);
    await Promise.all(
      [...byLayer.values()].map(async (indices) => {
        const out = await runLayer(indices.map((i) => batches[i]!));
        indices.forEach((i, k) => (ys[i] = out[k]!));
      }),
    );
    return ys;
  };

  return {
    runExperts,
    unitsAvailable,
    stats: () => ({ ...counters }),
    wireStats: () => {
      const { inMsgs, outMsgs, inBytes, outBytes } = nc.stats();
      return { inMsgs, outMsgs, inBytes, outBytes };
    },
    async close() {
      statsSub.unsubscribe();
      await drainWithin(nc, 2000);
    },
  };
}
