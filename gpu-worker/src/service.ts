/**
 * The worker as a NATS micro service (`$SRV.PING/INFO/STATS.unimoe-worker`), so standard NATS tooling
 * (`nats micro ls|info|stats`) and the autoscaler see every replica, its pool and units (metadata) and
 * its per-unit load over the stats window (each endpoint's `data`).
 */
import type { NatsConnection, Service } from 'nats';
import { loadSubject, WORKER_SERVICE, type WireModel } from '@unimoe/shared/wire/subjects';
import type { LoadCounters, UnitWindowStats } from './stats';

/** What a replica says about itself in `$SRV.INFO` metadata (all values are strings there). */
export interface WorkerIdentity {
  /** The bundle it serves: `model` and `bundle` (its hash) in the metadata. */
  model: WireModel;
  pool: string;
  replica: string;
  units: string[];
  /** The `--experts` / `--layers` / `--encoders` it was started with ('' when not given). */
  experts: string;
  layers: string;
  encoders: string;
  executionProvider: string;
}

/** The `data` of the `load` endpoint in `$SRV.STATS`, and the reply of its subject. */
export interface WorkerLoad {
  pool: string;
  replica: string;
  units: Record<string, UnitWindowStats>;
}

export async function addWorkerService(nc: NatsConnection, id: WorkerIdentity, counters: LoadCounters): Promise<Service> {
  const load = (): WorkerLoad => ({ pool: id.pool, replica: id.replica, units: counters.window() });
  const service = await nc.services.add({
    name: WORKER_SERVICE,
    version: '1.0.0',
    description: `unimoe pool ${id.pool} replica ${id.replica}`,
    metadata: {
      model: id.model.name,
      bundle: id.model.hash,
      pool: id.pool,
      replica: id.replica,
      units: id.units.join(','),
      experts: id.experts,
      layers: id.layers,
      encoders: id.encoders,
      execution_provider: id.executionProvider,
    },
    // One replica answers its own load subject: no queue group shared with others.
    queue: id.replica.replace(/[^A-Za-z0-9_-]/g, '_'),
    statsHandler: async () => load(),
  });
  service.addEndpoint('load', { subject: loadSubject(id.model, id.replica), handler: (_err, msg) => msg.respond(JSON.stringify(load())) });
  return service;
}
