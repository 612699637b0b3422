/**
 * NATS subjects. Every subject carries the served bundle's identity (model name and manifest hash), so
 * two versions of one model sharing a NATS server never answer each other's requests. A unit's subject
 * doubles as its queue group, so every replica of every pool that hosts the unit shares its requests.
 */
import { bundleHash } from '../bundle/identity';
import type { Manifest } from '../bundle/manifest';
import { bundleSubjectPrefix, subjectToken, type WireModel } from './subject-prefix';

export { bundleSubjectPrefix, subjectToken, type WireModel } from './subject-prefix';

export function wireModel(manifest: Manifest): WireModel {
  return { name: manifest.name, hash: bundleHash(manifest) };
}

/** `unimoe.<model>.<hash>.unit.<unit>`; unit names (`layer3.expert1`) keep their dots as subject tokens. */
export function unitSubject(model: WireModel, unit: string): string {
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(unit)) throw new Error(`unit name ${JSON.stringify(unit)} cannot be a NATS subject`);
  return `${bundleSubjectPrefix(model)}.unit.${unit}`;
}

/**
 * `unimoe.<model>.<hash>.replica.<replica>.unit.<unit>`: one replica's own subject for a unit (no queue
 * group), where the edge re-sends a request that the queue group may have handed to a dead or stopped replica.
 */
export function replicaUnitSubject(model: WireModel, replica: string, unit: string): string {
  return `${bundleSubjectPrefix(model)}.replica.${subjectToken(replica)}.unit.${unitSubject(model, unit).split('.unit.')[1]}`;
}

export function unitQueueGroup(model: WireModel, unit: string): string {
  return unitSubject(model, unit);
}

/** `unimoe.<model>.<hash>.stats.<pool>`: where a pool's replicas publish their load. */
export function statsSubject(model: WireModel, pool: string): string {
  return `${bundleSubjectPrefix(model)}.stats.${subjectToken(pool)}`;
}

/** The NATS services name every worker registers (`$SRV.PING|INFO|STATS.unimoe-worker`). */
export const WORKER_SERVICE = 'unimoe-worker';

/** `unimoe.<model>.<hash>.load.<replica>`: a worker's own load endpoint (the same JSON its `$SRV.STATS` data holds). */
export function loadSubject(model: WireModel, replica: string): string {
  return `${bundleSubjectPrefix(model)}.load.${subjectToken(replica)}`;
}

/** `unimoe.<model>.<hash>.demand`: the edge asks for a replica of a unit nobody serves (scale from zero). */
export function demandSubject(model: WireModel): string {
  return `${bundleSubjectPrefix(model)}.demand`;
}

/** `unimoe.<model>.<hash>.routed`: the edges' routed-token counts per (layer, expert) and modality, as deltas. */
export function routedSubject(model: WireModel): string {
  return `${bundleSubjectPrefix(model)}.routed`;
}

export { ENGINE_QUEUE, engineDiscoverSubject, engineReplicaSubject, engineSubject } from './engine-subjects';
