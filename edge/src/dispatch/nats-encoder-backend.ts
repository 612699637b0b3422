/**
 * Split mode's EncoderBackend: each encoder call becomes NATS requests (wire version 2, docs/wire.md)
 * to the unit's subject, answered by whichever pool hosts the unit (queue group), so one request's
 * modalities encode on different pools at once. A batch is split by items into messages that fit the
 * server's max payload; an item bigger than that travels in parts the worker pulls from this edge's
 * fetch subject, and big replies come back in parts. Encoders are pure: a timed-out, unanswered or
 * `internal`-failed attempt is sent again, like the expert backend does.
 */
import { createInbox, headers as natsHeaders, type Msg, type NatsConnection, type Subscription } from 'nats';
import { ENCODER_KINDS as ENCODER_KIND_LIST, type Manifest, type UnitSpec } from '@unimoe/shared/bundle/manifest';
import {
  checkEncoderDims,
  ENCODER_HEADERS,
  ENCODER_WIRE_VERSION,
  encodeEnvelopeHeaders,
  itemsPerMessage,
  partCount,
  partRange,
  PartAssembler,
  partStride,
  readEncoderEnvelope,
  readFetchIndex,
} from '@unimoe/shared/wire/encoder-format';
import { decodeValues, encodeErrorReply, encodeValues, readErrorReply, WIRE_DTYPE_BYTES, WireError, type WireDType } from '@unimoe/shared/wire/format';
import { unitSubject, wireModel } from '@unimoe/shared/wire/subjects';
import type { EncodedTensor, EncoderBackend } from '../engine/encoder-backend';
import type { DispatchStats, UnitsAvailability } from './nats-expert-backend';
import { connectNats } from '@unimoe/shared/runtime/nats-connect';
import { roleInboxPrefix, type NatsRole, type NatsSecurity } from '@unimoe/shared/runtime/nats-auth';
import { TRACE_HEADER, traceHeaderValue } from '@unimoe/shared/log';
import { drainWithin, NatsConnectionWatch } from '@unimoe/shared/runtime/nats-status';
import { waitForReplicaOnDemand } from './scale-from-zero';

export interface NatsEncoderBackendOptions {
  natsUrl: string;
  /** Credentials and TLS; default: from the environment (shared/src/runtime/nats-auth.ts). */
  natsSecurity?: NatsSecurity;
  /** Whose NATS permissions (inbox prefix) the connection uses: the edge's (default) or an engine's. */
  role?: NatsRole;
  /** The bundle's manifest: its name and hash are in every subject, its encoder units' shapes are checked both ways. */
  manifest: Manifest;
  /** Deadline of each request attempt (parts and the run included); default 30000 ms. */
  timeoutMs?: number;
  /** Further attempts after a timeout, "no responders" or an `internal` failure; default 2. */
  retries?: number;
  /** Element type on the wire; default f32 (exact). f16/bf16 halve the bytes and round. */
  dtype?: WireDType;
  /** Message size to plan for; default (and at most) the server's max_payload. */
  maxPayload?: number;
  /** Called for every answered request (metrics, benchmarks, tests); must be cheap. */
  observe?: (o: EncoderObservation) => void;
  /** Scale from zero: on "no responders", signal demand and hold the request up to this long for a replica (default off). */
  scaleFromZeroMs?: number;
}

/** One answered encoder request, as seen by the edge. */
export interface EncoderObservation {
  unit: string;
  items: number;
  requestBytes: number;
  replyBytes: number;
  /** performance.now() when the request was sent and when its last reply part arrived (this attempt). */
  sentAt: number;
  answeredAt: number;
  computeUs?: number;
}

export interface NatsEncoderBackend extends EncoderBackend {
  /** Readiness probe: pings each encoder unit's subject with an empty [0, ...] tensor. */
  unitsAvailable(units: string[], timeoutMs?: number): Promise<UnitsAvailability>;
  stats(): Omit<DispatchStats, 'hedges'>;
}

/** An encoder call that could not be answered; names the unit and says why. */
export class EncoderDispatchError extends Error {
  constructor(
    readonly unit: string,
    readonly reason: 'no-responders' | 'timeout' | 'error-reply' | 'bad-reply',
    message: string,
  ) {
    super(message);
    this.name = 'EncoderDispatchError';
  }
}

type Attempt =
  | { kind: 'ok'; data: Float32Array; replyBytes: number; computeUs?: number }
  | { kind: 'no-responders' }
  | { kind: 'timeout' }
  | { kind: 'error-reply'; code: string; message: string }
  | { kind: 'bad-reply'; message: string };

const NO_RESPONDER_BACKOFF_MS = 25;
const ENCODER_KINDS: ReadonlySet<string> = new Set(ENCODER_KIND_LIST);

export async function createNatsEncoderBackend(opts: NatsEncoderBackendOptions): Promise<NatsEncoderBackend> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const retries = opts.retries ?? 2;
  const dtype = opts.dtype ?? 'f32';
  const model = opts.manifest.name;
  const wire = wireModel(opts.manifest);
  const units = new Map(opts.manifest.units.filter((u) => ENCODER_KINDS.has(u.kind)).map((u) => [u.name, u]));
  const role: NatsRole = opts.role ?? { kind: 'edge' };
  const nc: NatsConnection = await connectNats(opts.natsUrl, 'unimoe-edge-encoders', { role, security: opts.natsSecurity });
  const watch = new NatsConnectionWatch(nc, 'unimoe edge encoders');
  const serverMax = nc.info?.max_payload ?? 1024 * 1024;
  const payload = Math.min(opts.maxPayload ?? serverMax, serverMax);
  const stride = partStride(payload);
  const counters: Omit<DispatchStats, 'hedges'> = { requests: 0, timeouts: 0, noResponders: 0 };
  let nextId = 0;
  const waitForReplica = waitForReplicaOnDemand(nc, wire, opts.scaleFromZeroMs);

  // Bodies of multi-part requests, by request id, until their request is answered or given up.
  const transfers = new Map<string, Uint8Array>();
  const fetchSubject = createInbox(roleInboxPrefix(role));
  const fetchSub: Subscription = nc.subscribe(fetchSubject, { callback: (err, msg) => !err && serveFetch(msg) });
  await nc.flush();

  function serveFetch(msg: Msg): void {
    const id = msg.headers?.get(ENCODER_HEADERS.requestId) ?? '';
    const body = transfers.get(id);
    const index = readFetchIndex(msg.headers);
    const count = body ? partCount(body.byteLength, stride) : 0;
    const respond = (data: Uint8Array, headers: Record<string, string>) => {
      const h = natsHeaders();
      for (const [k, v] of Object.entries(headers)) h.set(k, v);
      msg.respond(data, { headers: h });
    };
    if (!body || index === undefined || index < 1 || index >= count) {
      const why = body ? `no part ${msg.headers?.get(ENCODER_HEADERS.part) ?? '(none)'} in a ${count}-part body` : `no transfer ${JSON.stringify(id.slice(0, 60))} in progress`;
      const reply = encodeErrorReply('bad-part', why, id || undefined);
      respond(reply.body, { ...reply.headers, [ENCODER_HEADERS.version]: ENCODER_WIRE_VERSION });
      return;
    }
    const [start, end] = partRange(body.byteLength, stride, index);
    respond(body.subarray(start, end), { [ENCODER_HEADERS.version]: ENCODER_WIRE_VERSION, [ENCODER_HEADERS.part]: `${index}/${count}` });
  }

  /** One attempt: publish part 0 with a private reply inbox, collect every reply part or stop at the deadline. */
  function attempt(spec: UnitSpec, headers: Record<string, string>, first: Uint8Array, outDims: number[]): Promise<Attempt> {
    return new Promise((resolve) => {
      const inbox = createInbox(roleInboxPrefix(role));
      let parts: PartAssembler | undefined;
      let layout = '';
      let replyBytes = 0;
      let computeUs: number | undefined;
      let done = false;
      const finish = (a: Attempt) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        sub.unsubscribe();
        resolve(a);
      };
      const sub = nc.subscribe(inbox, {
        callback: (err, msg) => {
          if (err) return finish({ kind: 'bad-reply', message: err.message });
          if (msg.data.length === 0 && msg.headers?.code === 503) return finish({ kind: 'no-responders' });
          const error = readErrorReply(msg.headers);
          if (error) return finish({ kind: 'error-reply', ...error });
          try {
            const env = readEncoderEnvelope(msg.headers, msg.data.byteLength, { unit: spec.name, shape: spec.outputs[0]!.shape, dims: outDims });
            const thisLayout = `${env.dtype} ${env.part.count}x${env.part.stride}`;
            if (!parts) {
              parts = new PartAssembler(env.totalBytes, env.part.count, env.part.stride);
              layout = thisLayout;
            } else if (thisLayout !== layout) {
              throw new WireError('bad-part', `reply parts disagree: ${layout} then ${thisLayout}`);
            }
            parts.add(env.part.index, msg.data);
            replyBytes += msg.data.byteLength;
            const us = Number(msg.headers?.get(ENCODER_HEADERS.computeUs));
            if (Number.isFinite(us) && us > 0) computeUs = us;
            if (parts.complete) {
              const count = env.totalBytes / WIRE_DTYPE_BYTES[env.dtype];
              finish({ kind: 'ok', data: decodeValues(parts.bytes, env.dtype, count), replyBytes, ...(computeUs ? { computeUs } : {}) });
            }
          } catch (e) {
            finish({ kind: 'bad-reply', message: (e as Error).message });
          }
        },
      });
      const timer = setTimeout(() => finish({ kind: 'timeout' }), timeoutMs);
      const h = natsHeaders();
      for (const [k, v] of Object.entries(headers)) h.set(k, v);
      const trace = traceHeaderValue();
      if (trace) h.set(TRACE_HEADER, trace);
      try {
        nc.publish(unitSubject(wire, spec.name), first, { reply: inbox, headers: h });
      } catch (e) {
        finish({ kind: 'bad-reply', message: `NATS publish failed: ${(e as Error).message}` });
      }
    });
  }

  /** Items [items, ...itemDims] -> [items, ...outItemDims], retried like the expert backend. */
  async function requestOnce(spec: UnitSpec, x: Float32Array, dims: number[], outDims: number[]): Promise<Float32Array> {
    const unit = spec.name;
    const body = encodeValues(x, dtype);
    const count = partCount(body.byteLength, stride);
    const requestId = `${unit}-${(nextId++).toString(36)}`;
    const headers = encodeEnvelopeHeaders({ dtype, dims, part: { index: 0, count, stride }, requestId, ...(count > 1 ? { fetch: fetchSubject } : {}) });
    const [, firstEnd] = partRange(body.byteLength, stride, 0);
    if (count > 1) transfers.set(requestId, body);
    let lastFailure: 'no-responders' | 'timeout' | 'internal' = 'timeout';
    let lastMessage = '';
    let heldForReplica = false;
    try {
      for (let attemptNo = 0; attemptNo <= retries; attemptNo++) {
        // While NATS is down an attempt would only sit in the client's buffer until it times out.
        if (!(await watch.whenConnected(timeoutMs))) {
          counters.timeouts++;
          lastFailure = 'timeout';
          continue;
        }
        counters.requests++;
        const sentAt = performance.now();
        const a = await attempt(spec, headers, body.subarray(0, firstEnd), outDims);
        if (a.kind === 'ok') {
          opts.observe?.({ unit, items: dims[0]!, requestBytes: body.byteLength, replyBytes: a.replyBytes, sentAt, answeredAt: performance.now(), ...(a.computeUs ? { computeUs: a.computeUs } : {}) });
          return a.data;
        }
        if (a.kind === 'no-responders') {
          counters.noResponders++;
          lastFailure = 'no-responders';
          if (!heldForReplica) {
            heldForReplica = true;
            if (await waitForReplica(unit, async () => (await backend.unitsAvailable([unit], 1000)).missing.length === 0)) {
              attemptNo--; // a replica came up: this attempt does not count
              continue;
            }
          }
          if (attemptNo < retries) await sleep(NO_RESPONDER_BACKOFF_MS * 2 ** attemptNo);
          continue;
        }
        if (a.kind === 'timeout') {
          counters.timeouts++;
          lastFailure = 'timeout';
          continue;
        }
        // A worker-side failure may be that replica's alone (e.g. out of memory): another one may succeed.
        if (a.kind === 'error-reply' && a.code === 'internal') {
          lastFailure = 'internal';
          lastMessage = a.message;
          continue;
        }
        if (a.kind === 'error-reply') throw new EncoderDispatchError(unit, 'error-reply', `unit ${unit}: worker refused the request: ${a.code} ${a.message}`);
        throw new EncoderDispatchError(unit, 'bad-reply', `unit ${unit}: malformed reply: ${a.message}`);
      }
    } finally {
      transfers.delete(requestId);
    }
    const subject = unitSubject(wire, unit);
    if (lastFailure === 'no-responders') throw new EncoderDispatchError(unit, 'no-responders', `no worker hosts unit ${unit} (nobody answers ${subject}; is a pool started with --encoders serving it?)`);
    if (lastFailure === 'internal') throw new EncoderDispatchError(unit, 'error-reply', `unit ${unit}: worker failed ${retries + 1} times: ${lastMessage}`);
    throw new EncoderDispatchError(unit, 'timeout', `unit ${unit}: no complete reply on ${subject} within ${timeoutMs} ms, ${retries + 1} attempts`);
  }

  let closed = false;
  const backend: NatsEncoderBackend = {
    async encode(unit: string, input: EncodedTensor): Promise<EncodedTensor> {
      if (closed) throw new Error('encoder backend is closed');
      const spec = units.get(unit);
      if (!spec) throw new Error(`no encoder unit ${unit} in model ${model} (it has: ${[...units.keys()].join(', ') || 'none'})`);
      const [inSpec] = spec.inputs;
      const [outSpec] = spec.outputs;
      if (!inSpec || !outSpec) throw new Error(`unit ${unit}: the manifest lists no input or output`);
      const { dims, data } = input;
      const items = dims[0]!;
      if (!Number.isInteger(items) || items < 1) throw new Error(`unit ${unit}: ${inSpec.name} has ${items} items (dims [${dims.join(', ')}]), expected >= 1`);
      try {
        checkEncoderDims([1, ...dims.slice(1)], { unit, shape: inSpec.shape });
      } catch (err) {
        throw new Error(`${inSpec.name}: ${(err as Error).message}`);
      }
      const itemSize = dims.slice(1).reduce((a, b) => a * b, 1);
      if (!(data instanceof Float32Array) || data.length !== items * itemSize) {
        throw new Error(`unit ${unit}: ${inSpec.name} holds ${data?.length ?? 'no'} values for dims [${dims.join(', ')}] (${items * itemSize})`);
      }
      const outItemDims = outSpec.shape.slice(1) as number[];
      const outItemSize = outItemDims.reduce((a, b) => a * b, 1);
      const per = itemsPerMessage(payload, itemSize * WIRE_DTYPE_BYTES[dtype]);
      const out = new Float32Array(items * outItemSize);
      const starts = Array.from({ length: Math.ceil(items / per) }, (_, i) => i * per);
      await Promise.all(
        starts.map(async (start) => {
          const n = Math.min(per, items - start);
          const y = await requestOnce(spec, data.subarray(start * itemSize, (start + n) * itemSize), [n, ...dims.slice(1)], [n, ...outItemDims]);
          out.set(y, start * outItemSize);
        }),
      );
      return { data: out, dims: [items, ...outItemDims] };
    },
    async unitsAvailable(probe, probeTimeoutMs = Math.min(timeoutMs, 2000)) {
      const answered = await Promise.all(
        probe.map(async (unit) => {
          const spec = units.get(unit);
          if (!spec) return false;
          const zero = [0, ...spec.inputs[0]!.shape.slice(1).map(Number)];
          const h = natsHeaders();
          for (const [k, v] of Object.entries(encodeEnvelopeHeaders({ dtype, dims: zero, part: { index: 0, count: 1, stride } }))) h.set(k, v);
          return nc.request(unitSubject(wire, unit), new Uint8Array(0), { timeout: probeTimeoutMs, headers: h }).then(
            (reply) => !readErrorReply(reply.headers),
            () => false,
          );
        }),
      );
      return { available: probe.filter((_, i) => answered[i]), missing: probe.filter((_, i) => !answered[i]) };
    },
    stats: () => ({ ...counters }),
    async close() {
      if (closed) return;
      closed = true;
      fetchSub.unsubscribe();
      await drainWithin(nc, 2000);
    },
  };
  return backend;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
