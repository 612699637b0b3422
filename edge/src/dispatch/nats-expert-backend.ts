/**
 * Split mode's ExpertBackend: every (layer, expert) batch becomes a NATS request to the unit's subject,
 * answered by whichever replica of whichever pool hosts it (queue group). Expert FFNs are pure, so a
 * timed-out or unanswered request is simply retried, which is how a request survives a replica dying.
 */
import { ErrorCode, headers as natsHeaders, type Msg, type NatsConnection, type NatsError } from 'nats';
import { unitName } from '@unimoe/shared/bundle/manifest';
import { decodeTensorMessage, encodeTensorMessage, readErrorReply, WIRE_HEADERS, WireError, type WireDType } from '@unimoe/shared/wire/format';
import { maxRowsPerMessage, rowRanges } from '@unimoe/shared/wire/split';
import { unitSubject } from '@unimoe/shared/wire/subjects';
import type { ExpertBackend, ExpertBatch } from '../engine/expert-backend';
import { connectNats } from '@unimoe/shared/runtime/nats-connect';
import { pingExpertUnit, waitForReplicaOnDemand } from './scale-from-zero';

export interface NatsExpertBackendOptions {
  natsUrl: string;
  /** The manifest's model name (it is part of every subject). */
  model: string;
  hidden: number;
  /** Deadline of each request attempt; default 10000 ms. */
  timeoutMs?: number;
  /** Further attempts after a timeout or "no responders"; default 2. */
  retries?: number;
  /** Element type on the wire; default f32 (exact). f16/bf16 halve the bytes and round. */
  dtype?: WireDType;
  /** Split batches above this many payload bytes; default (and at most) the server's max_payload. */
  maxPayload?: number;
  /** Called for every answered request (metrics, benchmarks); must be cheap. */
  observe?: (reply: ReplyObservation) => void;
  /** Scale from zero: on "no responders", signal demand and hold the batch up to this long for a replica (default off). */
  scaleFromZeroMs?: number;
}

/** One answered request, as seen by the edge. */
export interface ReplyObservation {
  unit: string;
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
  /** NATS requests sent, retries included. */
  requests: number;
  /** Attempts that got no reply in time (e.g. the replica died holding the request). */
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
    readonly reason: 'no-responders' | 'timeout' | 'error-reply' | 'bad-reply' | 'nats',
    message: string,
  ) {
    super(message);
    this.name = 'ExpertDispatchError';
  }
}

const NO_RESPONDER_BACKOFF_MS = 25;

export async function createNatsExpertBackend(opts: NatsExpertBackendOptions): Promise<NatsExpertBackend> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const retries = opts.retries ?? 2;
  const dtype = opts.dtype ?? 'f32';
  const { hidden, model } = opts;
  const nc: NatsConnection = await connectNats(opts.natsUrl, 'unimoe-edge');
  const serverMax = nc.info?.max_payload ?? 1024 * 1024;
  const maxRows = maxRowsPerMessage(Math.min(opts.maxPayload ?? serverMax, serverMax), hidden, dtype);
  let nextId = 0;
  const counters: DispatchStats = { requests: 0, timeouts: 0, noResponders: 0 };
  const observe = opts.observe;
  const waitForReplica = waitForReplicaOnDemand(nc, model, opts.scaleFromZeroMs);

  const requestOnce = async (unit: string, x: Float32Array, rows: number): Promise<Float32Array> => {
    const subject = unitSubject(model, unit);
    const requestId = `${unit}-${(nextId++).toString(36)}`;
    const message = encodeTensorMessage({ dtype, rows, hidden, data: x, requestId });
    const h = natsHeaders();
    for (const [k, v] of Object.entries(message.headers)) h.set(k, v);
    let lastFailure = '';
    let heldForReplica = false;
    for (let attempt = 0; attempt <= retries; attempt++) {
      let reply: Msg;
      counters.requests++;
      const sentAt = observe ? performance.now() : 0;
      try {
        reply = await nc.request(subject, message.body, { timeout: timeoutMs, headers: h });
      } catch (err) {
        const code = (err as NatsError).code;
        if (code === ErrorCode.NoResponders) {
          counters.noResponders++;
          lastFailure = 'no-responders';
          if (!heldForReplica) {
            heldForReplica = true;
            if (await waitForReplica(unit, () => pingExpertUnit(nc, subject, hidden))) {
              attempt--; // a replica came up: this attempt does not count
              continue;
            }
          }
          if (attempt < retries) await sleep(NO_RESPONDER_BACKOFF_MS * 2 ** attempt);
          continue;
        }
        if (code === ErrorCode.Timeout) {
          counters.timeouts++;
          lastFailure = 'timeout';
          continue;
        }
        throw new ExpertDispatchError(unit, 'nats', `unit ${unit}: NATS request on ${subject} failed: ${(err as Error).message}`);
      }
      const error = readErrorReply(reply.headers);
      // A worker-side failure may be that replica's alone (e.g. out of memory): another one may succeed.
      if (error?.code === 'internal' && attempt < retries) {
        lastFailure = 'internal';
        continue;
      }
      const y = decodeReply(unit, reply, rows);
      if (observe) {
        const compute = Number(reply.headers?.get(WIRE_HEADERS.computeUs));
        observe({
          unit,
          rows,
          requestBytes: message.body.byteLength,
          replyBytes: reply.data.byteLength,
          roundTripMs: performance.now() - sentAt,
          ...(Number.isFinite(compute) && compute > 0 ? { computeUs: compute } : {}),
        });
      }
      return y;
    }
    if (lastFailure === 'no-responders') {
      throw new ExpertDispatchError(unit, 'no-responders', `no worker hosts unit ${unit} (nobody answers ${subject}; is a pool serving it running?)`);
    }
    throw new ExpertDispatchError(unit, 'timeout', `unit ${unit}: no reply on ${subject} within ${timeoutMs} ms, ${retries + 1} attempts`);
  };

  const decodeReply = (unit: string, reply: Msg, rows: number): Float32Array => {
    const error = readErrorReply(reply.headers);
    if (error) throw new ExpertDispatchError(unit, 'error-reply', `unit ${unit}: worker refused the batch: ${error.code} ${error.message}`);
    try {
      return decodeTensorMessage(reply.headers, reply.data, { hidden, rows }).data;
    } catch (err) {
      if (err instanceof WireError) throw new ExpertDispatchError(unit, 'bad-reply', `unit ${unit}: malformed reply: ${err.message}`);
      throw err;
    }
  };

  const runBatch = async (b: ExpertBatch): Promise<Float32Array> => {
    const unit = unitName.expert(b.layer, b.expert);
    if (b.x.length !== b.tokens * hidden) {
      throw new RangeError(`batch for ${unit} has ${b.x.length} values, ${b.tokens} tokens x hidden ${hidden} needs ${b.tokens * hidden}`);
    }
    if (b.tokens <= maxRows) return b.tokens === 0 ? new Float32Array(0) : requestOnce(unit, b.x, b.tokens);
    const out = new Float32Array(b.tokens * hidden);
    await Promise.all(
      rowRanges(b.tokens, maxRows).map(async ([start, end]) => {
        const y = await requestOnce(unit, b.x.subarray(start * hidden, end * hidden), end - start);
        out.set(y, start * hidden);
      }),
    );
    return out;
  };

  return {
    runExperts: (batches) => Promise.all(batches.map(runBatch)),
    async unitsAvailable(units, probeTimeoutMs = Math.min(timeoutMs, 2000)) {
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
    },
    stats: () => ({ ...counters }),
    wireStats: () => {
      const { inMsgs, outMsgs, inBytes, outBytes } = nc.stats();
      return { inMsgs, outMsgs, inBytes, outBytes };
    },
    async close() {
      if (!nc.isClosed()) await nc.drain();
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
