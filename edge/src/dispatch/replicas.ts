/**
 * Which replicas answered which expert unit, and when each replica last answered anything. A request the
 * queue group handed to a dead or stopped replica is re-sent to that unit's liveliest replica (the one
 * that answered most recently) on its own subject, so the re-send cannot land on the same bad replica,
 * as a queue-group re-send would half the time with two replicas.
 */
export class ReplicaTracker {
  /** unit -> replicas seen answering it. */
  private readonly hosts = new Map<string, Set<string>>();
  /** replica -> performance.now() of its latest reply. */
  private readonly lastReply = new Map<string, number>();

  answered(unit: string, replica: string): void {
    let set = this.hosts.get(unit);
    if (!set) this.hosts.set(unit, (set = new Set()));
    set.add(replica);
    this.lastReply.set(replica, performance.now());
  }

  /** The replica hosting `unit` that answered anything most recently, if any is known. */
  liveliest(unit: string): string | undefined {
    let best: string | undefined;
    let bestAt = -Infinity;
    for (const replica of this.hosts.get(unit) ?? []) {
      const at = this.lastReply.get(replica) ?? -Infinity;
      if (at > bestAt) [best, bestAt] = [replica, at];
    }
    return best;
  }

  /** The replica is gone (nobody subscribes to its subject any more). */
  forget(replica: string): void {
    this.lastReply.delete(replica);
    for (const set of this.hosts.values()) set.delete(replica);
  }
}
