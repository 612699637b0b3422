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

/**
 * `unimoe.<model>.replica.<replica>.unit.<unit>`: one replica's own subject for a unit (no queue group),
 * where the edge re-sends a request that the queue group may have handed to a dead or stopped replica.
 */
export function replicaUnitSubject(model: string, replica: string, unit: string): string {
  return `unimoe.${subjectToken(model)}.replica.${subjectToken(replica)}.unit.${unitSubject(model, unit).split('.unit.')[1]}`;
}

export function unitQueueGroup(model: string, unit: string): string {
  return unitSubject(model, unit);
}

/** `unimoe.<model>.stats.<pool>`: where a pool's replicas publish their load. */
export function statsSubject(model: string, pool: string): string {
  return `unimoe.${subjectToken(model)}.stats.${subjectToken(pool)}`;
}
