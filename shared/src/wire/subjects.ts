/**
 * NATS subjects. Every subject carries the served bundle's identity (model name and manifest hash), so
 * two versions of one model sharing a NATS server never answer each other's requests. A unit's subject
 * doubles as its queue group, so every replica of every pool that hosts the unit shares its requests.
 */
import { bundleHash } from '../bundle/identity';
import { formatIndexList } from '../index-list';
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

/**
 * A layer group: the experts one pool hosts on one layer, answered together (one request carries all
 * their rows; docs/wire.md "Layer-group messages"). Its name is used like a unit name, so its subjects
 * are `unitSubject(model, name)` and `replicaUnitSubject(model, replica, name)`:
 * `layer<L>.experts.<set>` where <set> lists the experts as ranges joined by `_` (`0-3`, `0_2_5-7`).
 */
export function expertGroupName(layer: number, experts: readonly number[]): string {
  const sorted = [...new Set(experts)].sort((a, b) => a - b);
  if (sorted.length === 0 || sorted.some((e) => !Number.isSafeInteger(e) || e < 0) || !Number.isSafeInteger(layer) || layer < 0) {
    throw new Error(`no expert group for layer ${layer} and experts [${experts.join(', ')}]`);
  }
  return `layer${layer}.experts.${formatIndexList(sorted, '_')}`;
}

/** The layer and experts of a group name, or undefined when `name` is not one. */
export function parseExpertGroupName(name: string): { layer: number; experts: number[] } | undefined {
  const m = /^layer(\d{1,9})\.experts\.(\d{1,9}(?:-\d{1,9})?(?:_\d{1,9}(?:-\d{1,9})?)*)$/.exec(name);
  if (!m) return undefined;
  const experts: number[] = [];
  for (const range of m[2]!.split('_')) {
    const [a, b = a] = range.split('-').map(Number);
    if (b! < a! || b! - a! > 4096) return undefined;
    for (let e = a!; e <= b!; e++) experts.push(e);
  }
  return { layer: Number(m[1]), experts };
}

/** The layer groups of a list of unit names (`layer3.expert1`...): one per layer with experts. */
export function expertGroupsOfUnits(units: readonly string[]): string[] {
  const byLayer = new Map<number, number[]>();
  for (const u of units) {
    const m = /^layer(\d+)\.expert(\d+)$/.exec(u);
    if (m) byLayer.set(Number(m[1]), [...(byLayer.get(Number(m[1])) ?? []), Number(m[2])]);
  }
  return [...byLayer].map(([layer, experts]) => expertGroupName(layer, experts));
}

export function unitQueueGroup(model: WireModel, unit: string): string {
  return unitSubject(model, unit);
}

/** `unimoe.<model>.<hash>.stats.<pool>`: where a pool's replicas publish their load. */
export function statsSubject(model: WireModel, pool: string): string {
  return `${bundleSubjectPrefix(model)}.stats.${subjectToken(pool)}`;
}

/** `unimoe.<model>.<hash>.stats.*`: every pool's load statistics (the edge learns layer groups from them). */
export function allStatsSubject(model: WireModel): string {
  return `${bundleSubjectPrefix(model)}.stats.*`;
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
