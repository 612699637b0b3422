/**
 * Scale from zero, the edge's half: when a unit has no responders (its pool was scaled to zero), ask
 * for a replica on `unimoe.<model>.demand` (the autoscaler listens) and hold the step until the unit
 * answers a probe or the deadline passes. Concurrent batches for the same unit share one wait.
 */
import type { NatsConnection } from 'nats';
import { randomBytes } from 'node:crypto';
import { demandSubject, type WireModel } from '@unimoe/shared/wire/subjects';

/** Resolves true once `unit` answers `probe`, false at the deadline (or at once when holding is off). */
export type ReplicaWait = (unit: string, probe: () => Promise<boolean>) => Promise<boolean>;

const POLL_MS = 200;
/** Demand is repeated this often while waiting, in case the autoscaler (re)started after the first. */
const REPEAT_DEMAND_MS = 2000;

export function waitForReplicaOnDemand(nc: NatsConnection, model: WireModel, holdMs: number | undefined): ReplicaWait {
  if (!holdMs) return async () => false;
  const edge = `edge-${randomBytes(3).toString('hex')}`;
  const waits = new Map<string, Promise<boolean>>();
  const demand = (unit: string) => {
    if (!nc.isClosed()) nc.publish(demandSubject(model), JSON.stringify({ unit, edge }));
  };
  return (unit, probe) => {
    let wait = waits.get(unit);
    if (!wait) {
      wait = (async () => {
        const deadline = performance.now() + holdMs;
        let demandedAt = -Infinity;
        while (performance.now() < deadline) {
          if (performance.now() - demandedAt >= REPEAT_DEMAND_MS) {
            demand(unit);
            demandedAt = performance.now();
          }
          if (await probe()) return true;
          await new Promise((r) => setTimeout(r, POLL_MS));
        }
        return false;
      })().finally(() => waits.delete(unit));
      waits.set(unit, wait);
    }
    return wait;
  };
}
