/**
 * Answers encoder-unit requests (wire version 2, docs/wire.md): validates the envelope against the
 * unit's manifest shape, pulls the body's remaining parts from the edge's fetch subject, runs the unit
 * through its coalescer and publishes the [N, tokens, H] output in parts sized for this server.
 * Malformed input becomes an error reply, never a throw; in-flight work is tracked for the drain.
 */
import { headers as natsHeaders, type Msg, type NatsConnection } from 'nats';
import type { UnitSpec } from '@unimoe/shared/bundle/manifest';
import {
  ENCODER_HEADERS,
  ENCODER_WIRE_VERSION,
  encodeEnvelopeHeaders,
  partCount,
  partRange,
  PartAssembler,
  partStride,
  readEncoderEnvelope,
  type EncoderEnvelope,
} from '@unimoe/shared/wire/encoder-format';
import { decodeValues, encodeErrorReply, encodeValues, readErrorReply, WIRE_DTYPE_BYTES, WireError, type WireMessage } from '@unimoe/shared/wire/format';
import type { Coalescer } from './coalescer';

export interface EncoderUnit {
  spec: UnitSpec;
  coalescer: Coalescer;
  /** Output dims after the leading item axis, e.g. [576, H]. */
  outItemDims: number[];
}

/** Deadline for pulling one part from the edge. */
const FETCH_TIMEOUT_MS = 10_000;
/** Parts pulled at once per request (bounds the memory a request holds in flight). */
const FETCH_CONCURRENCY = 4;

export class EncoderRequests {
  private inFlight = new Set<Promise<void>>();
  private readonly stride: number;

  constructor(
    private readonly nc: NatsConnection,
    private readonly log: (line: string) => void,
  ) {
    this.stride = partStride(nc.info?.max_payload ?? 1024 * 1024);
  }

  handle(msg: Msg, unit: EncoderUnit): void {
    const work = this.answer(msg, unit).finally(() => this.inFlight.delete(work));
    this.inFlight.add(work);
  }

  /** Resolves once every request received so far has been answered. */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }

  private async answer(msg: Msg, unit: EncoderUnit): Promise<void> {
    const name = unit.spec.name;
    let requestId = msg.headers?.get(ENCODER_HEADERS.requestId) || undefined;
    try {
      const env = readEncoderEnvelope(msg.headers, msg.data.byteLength, { unit: name, shape: unit.spec.inputs[0]!.shape, request: true });
      requestId = env.requestId;
      const items = env.dims[0]!;
      const outDims = [items, ...unit.outItemDims];
      if (items === 0) {
        this.publishTensor(msg, env, outDims, new Float32Array(0)); // readiness ping
        return;
      }
      const body = env.part.count === 1 ? msg.data : await this.fetchRest(env, msg.data, name);
      const x = decodeValues(body, env.dtype, env.totalBytes / WIRE_DTYPE_BYTES[env.dtype]);
      let result;
      try {
        result = await unit.coalescer.submit(x, items);
      } catch (err) {
        throw new Error(`unit ${name}: ${(err as Error).message}`);
      }
      this.publishTensor(msg, env, outDims, result.y, result.computeUs);
    } catch (err) {
      const reply = err instanceof WireError ? encodeErrorReply(err.code, err.message, requestId) : encodeErrorReply('internal', `unit ${name}: ${(err as Error).message}`, requestId);
      reply.headers[ENCODER_HEADERS.version] = ENCODER_WIRE_VERSION;
      this.publish(msg, reply);
    }
  }

  /** Parts 1..K-1 from the edge's fetch subject, FETCH_CONCURRENCY at a time. */
  private async fetchRest(env: EncoderEnvelope, first: Uint8Array, unit: string): Promise<Uint8Array> {
    const { count, stride } = env.part;
    const parts = new PartAssembler(env.totalBytes, count, stride);
    parts.add(0, first);
    let next = 1;
    const pull = async () => {
      while (next < count) {
        const index = next++;
        const h = natsHeaders();
        h.set(ENCODER_HEADERS.version, ENCODER_WIRE_VERSION);
        h.set(ENCODER_HEADERS.part, `${index}/${count}`);
        if (env.requestId) h.set(ENCODER_HEADERS.requestId, env.requestId);
        let reply;
        try {
          reply = await this.nc.request(env.fetch!, new Uint8Array(0), { timeout: FETCH_TIMEOUT_MS, headers: h });
        } catch (err) {
          throw new WireError('bad-part', `unit ${unit}: fetching part ${index}/${count} from ${env.fetch} failed: ${(err as Error).message}`);
        }
        const error = readErrorReply(reply.headers);
        if (error) throw new WireError('bad-part', `unit ${unit}: the edge refused part ${index}/${count}: ${error.code} ${error.message}`);
        parts.add(index, reply.data);
      }
    };
    await Promise.all(Array.from({ length: Math.min(FETCH_CONCURRENCY, count - 1) }, pull));
    return parts.bytes;
  }

  /** The output as K parts of this server's part size, all to the request's reply subject. */
  private publishTensor(msg: Msg, env: EncoderEnvelope, dims: number[], y: Float32Array, computeUs?: number): void {
    const body = encodeValues(y, env.dtype);
    const count = partCount(body.byteLength, this.stride);
    for (let index = 0; index < count; index++) {
      const [start, end] = partRange(body.byteLength, this.stride, index);
      const headers = encodeEnvelopeHeaders({ dtype: env.dtype, dims, part: { index, count, stride: this.stride }, requestId: env.requestId });
      if (computeUs !== undefined) headers[ENCODER_HEADERS.computeUs] = String(computeUs);
      this.publish(msg, { headers, body: body.subarray(start, end) });
    }
  }

  private publish(msg: Msg, m: WireMessage): void {
    if (!msg.reply) return; // a publish without a reply subject gets no answer
    try {
      const h = natsHeaders();
      for (const [k, v] of Object.entries(m.headers)) h.set(k, v);
      this.nc.publish(msg.reply, m.body, { headers: h });
    } catch (err) {
      this.log(`[unimoe worker] could not reply on ${msg.subject}: ${(err as Error).message}`);
    }
  }
}
