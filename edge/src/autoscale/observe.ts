/**
 * The autoscaler's inputs, all from NATS: every worker replica's identity and per-unit load over its
 * stats window (the NATS services protocol, `$SRV.STATS.unimoe-worker`), the edges' routed-token
 * counts per (layer, expert) and modality (`unimoe.<model>.routed`), and the edges' demand for units
 * nobody serves (`unimoe.<model>.demand`, the scale-from-zero signal).
 */
import { ErrorCode, RequestStrategy, type NatsConnection, type NatsError, type ServiceStats, type Subscription } from 'nats';
import { connectNats } from '@unimoe/shared/runtime/nats-connect';
import { demandSubject, routedSubject, WORKER_SERVICE, type WireModel } from '@unimoe/shared/wire/subjects';
import type { NatsSecurity } from '@unimoe/shared/runtime/nats-auth';
import type { WorkerLoad } from '@unimoe/gpu-worker/service';
import type { PoolObservation } from './decide';

/** One replica as `$SRV.STATS` describes it. */
export interface ReplicaSnapshot {
  pool: string;
  replica: string;
  units: string[];
  load: WorkerLoad['units'];
}

/** What an edge publishes on the routed subject: tokens since its previous message. */
export interface RoutedMessage {
  edge: string;
  layers: number;
  experts: number;
  intervalMs: number;
  /** modality -> [layer][expert] token counts. */
  counts: Record<string, number[][]>;
}

/** The demand message: a unit an edge found no responders for. */
export interface DemandMessage {
  unit: string;
  edge: string;
}

export interface ObserverOptions {
  natsUrl: string;
  /** The bundle whose pools it watches (name and hash, as in its NATS subjects). */
  model: WireModel;
  natsSecurity?: NatsSecurity;
  layers: number;
  experts: number;
  /** How long `$SRV.STATS` replies are collected; default 500 ms. */
  discoveryMs?: number;
  /** Routed-token rates are averaged over this window; default 10000 ms. */
  routedWindowMs?: number;
}

export class Observer {
  private demand = new Set<string>();
  private routed: { at: number; counts: number[][] }[] = [];
  private subs: Subscription[] = [];

  private constructor(
    readonly nc: NatsConnection,
    private readonly o: Required<Omit<ObserverOptions, 'natsSecurity'>>,
  ) {}

  static async open(opts: ObserverOptions): Promise<Observer> {
    const nc = await connectNats(opts.natsUrl, 'unimoe-autoscaler', { role: { kind: 'autoscaler' }, security: opts.natsSecurity });
    const { natsSecurity: _, ...rest } = opts;
    const o = new Observer(nc, { discoveryMs: 500, routedWindowMs: 10_000, ...rest });
    o.subs.push(
      nc.subscribe(demandSubject(opts.model), {
        callback: (err, msg) => {
          if (err) return;
          const d = safeJson<DemandMessage>(msg.data);
          if (typeof d?.unit === 'string') o.demand.add(d.unit);
        },
      }),
      nc.subscribe(routedSubject(opts.model), {
        callback: (err, msg) => {
          if (err) return;
          const r = safeJson<RoutedMessage>(msg.data);
          if (r && r.layers === opts.layers && r.experts === opts.experts) o.routed.push({ at: performance.now(), counts: sumModalities(r.counts, r.layers, r.experts) });
        },
      }),
    );
    await nc.flush();
    return o;
  }

  /** Every live replica of this model, from one `$SRV.STATS` round. */
  async replicas(): Promise<ReplicaSnapshot[]> {
    const client = this.nc.services.client({ strategy: RequestStrategy.Timer, maxWait: this.o.discoveryMs });
    const out: ReplicaSnapshot[] = [];
    try {
      for await (const s of await client.stats(WORKER_SERVICE)) {
        const snap = toSnapshot(s, this.o.model);
        if (snap) out.push(snap);
      }
    } catch (err) {
      if (!isNoResponders(err)) throw err; // no replica at all is an answer: zero
    }
    return out;
  }

  /** Units demanded since the previous call. */
  takeDemand(): string[] {
    const units = [...this.demand];
    this.demand.clear();
    return units;
  }

  /** Routed tokens per second [layer][expert] over the window; undefined when no edge reported in it. */
  routedRate(): number[][] | undefined {
    const since = performance.now() - this.o.routedWindowMs;
    this.routed = this.routed.filter((r) => r.at >= since);
    if (this.routed.length === 0) return undefined;
    const rate = Array.from({ length: this.o.layers }, () => new Array<number>(this.o.experts).fill(0));
    for (const r of this.routed) for (let l = 0; l < this.o.layers; l++) for (let e = 0; e < this.o.experts; e++) rate[l]![e]! += r.counts[l]![e]! / (this.o.routedWindowMs / 1000);
    return rate;
  }

  async close(): Promise<void> {
    for (const s of this.subs) s.unsubscribe();
    if (!this.nc.isClosed()) await this.nc.drain();
  }
}

/** Per pool: ready replicas and their summed busy fraction, tokens/s and queue depth. */
export function poolObservations(replicas: ReplicaSnapshot[], demandByPool: Map<string, string[]>): Record<string, PoolObservation> {
  const pools: Record<string, PoolObservation> = {};
  const get = (pool: string) => (pools[pool] ??= { ready: 0, busy: 0, tokensPerSecond: 0, queueDepth: 0, demand: [] });
  for (const r of replicas) {
    const p = get(r.pool);
    p.ready++;
    let busy = 0;
    for (const u of Object.values(r.load)) {
      busy += u.busyFraction; // a replica runs its units one after another on one thread
      p.tokensPerSecond += u.tokensPerSecond;
      p.queueDepth += u.queueDepth;
    }
    p.busy += Math.min(1, busy);
  }
  for (const [pool, units] of demandByPool) get(pool).demand.push(...units);
  return pools;
}

/** Ready replicas per unit [layer][expert] (every pool, hot ones included). */
export function replicasPerUnit(replicas: Pick<ReplicaSnapshot, 'units'>[], layers: number, experts: number): number[][] {
  const out = Array.from({ length: layers }, () => new Array<number>(experts).fill(0));
  for (const r of replicas) {
    for (const u of r.units) {
      const m = /^layer(\d+)\.expert(\d+)$/.exec(u);
      if (m && Number(m[1]) < layers && Number(m[2]) < experts) out[Number(m[1])]![Number(m[2])]!++;
    }
  }
  return out;
}

export function isNoResponders(err: unknown): boolean {
  return (err as NatsError)?.code === ErrorCode.NoResponders;
}

function toSnapshot(s: ServiceStats, model: WireModel): ReplicaSnapshot | undefined {
  const meta = s.metadata ?? {};
  if (meta.model !== model.name || meta.bundle !== model.hash || !meta.pool || !meta.replica) return undefined;
  const data = s.endpoints?.find((e) => e.name === 'load')?.data as WorkerLoad | undefined;
  return { pool: meta.pool, replica: meta.replica, units: meta.units ? meta.units.split(',') : [], load: data?.units ?? {} };
}

function sumModalities(counts: Record<string, number[][]>, layers: number, experts: number): number[][] {
  const out = Array.from({ length: layers }, () => new Array<number>(experts).fill(0));
  for (const grid of Object.values(counts ?? {})) for (let l = 0; l < layers; l++) for (let e = 0; e < experts; e++) out[l]![e]! += Number(grid?.[l]?.[e]) || 0;
  return out;
}

function safeJson<T>(data: Uint8Array): T | undefined {
  try {
    return JSON.parse(new TextDecoder().decode(data)) as T;
  } catch {
    return undefined;
  }
}
