/**
 * NATS subjects. A unit's subject doubles as its queue group, so every replica of every pool that hosts
 * the unit shares its requests.
 */

/** A model name as one subject token: NATS subjects split on '.', and ' ', '*', '>' are reserved. */
export function subjectToken(name: string): string {
  const token = name.replace(/[^A-Za-z0-9_-]/g, '_');
  if (!token) throw new Error('a model name is needed to build NATS subjects');
  return token;
}

/** `unimoe.<model>.unit.<unit>`; unit names (`layer3.expert1`) keep their dots as subject tokens. */
export function unitSubject(model: string, unit: string): string {
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(unit)) throw new Error(`unit name ${JSON.stringify(unit)} cannot be a NATS subject`);
  return `unimoe.${subjectToken(model)}.unit.${unit}`;
}

export function unitQueueGroup(model: string, unit: string): string {
  return unitSubject(model, unit);
}

/** `unimoe.<model>.stats.<pool>`: where a pool's replicas publish their load. */
export function statsSubject(model: string, pool: string): string {
  return `unimoe.${subjectToken(model)}.stats.${subjectToken(pool)}`;
}

/** The NATS services name every worker registers (`$SRV.PING|INFO|STATS.unimoe-worker`). */
export const WORKER_SERVICE = 'unimoe-worker';

/** `unimoe.<model>.load.<replica>`: a worker's own load endpoint (the same JSON its `$SRV.STATS` data holds). */
export function loadSubject(model: string, replica: string): string {
  return `unimoe.${subjectToken(model)}.load.${subjectToken(replica)}`;
}

/** `unimoe.<model>.demand`: the edge asks for a replica of a unit nobody serves (scale from zero). */
export function demandSubject(model: string): string {
  return `unimoe.${subjectToken(model)}.demand`;
}

/** `unimoe.<model>.routed`: the edges' routed-token counts per (layer, expert) and modality, as deltas. */
export function routedSubject(model: string): string {
  return `unimoe.${subjectToken(model)}.routed`;
}
