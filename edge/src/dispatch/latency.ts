/**
 * Per-unit round-trip estimates, the way TCP sets its retransmission timeout (RFC 6298): a smoothed
 * mean and mean deviation, updated from every answered request. `hedgeAfterMs` is mean + 4 deviations:
 * a healthy replica's reply comes before it almost always, so a request still unanswered then is
 * probably on a dead or stopped replica and is worth sending again.
 */

interface Estimate {
  srtt: number;
  rttvar: number;
}

export interface LatencyOptions {
  /** Never hedge sooner than this (noise on a loaded machine is not a fault); default 100 ms. */
  minHedgeMs?: number;
  /** Never wait longer than this before the first re-send; default 2000 ms. */
  maxHedgeMs?: number;
  /** Before any reply was seen; default 1000 ms. */
  initialHedgeMs?: number;
}

export class LatencyTracker {
  private readonly units = new Map<string, Estimate>();
  /** Over every unit: the estimate for units not heard from yet. */
  private all: Estimate | undefined;
  private readonly min: number;
  private readonly max: number;
  private readonly initial: number;

  constructor(o: LatencyOptions = {}) {
    this.min = o.minHedgeMs ?? 100;
    this.max = Math.max(this.min, o.maxHedgeMs ?? 2000);
    this.initial = o.initialHedgeMs ?? 1000;
  }

  observe(unit: string, ms: number): void {
    this.units.set(unit, update(this.units.get(unit), ms));
    this.all = update(this.all, ms);
  }

  /** How long to wait for a reply before sending the request again. */
  hedgeAfterMs(unit: string): number {
    const e = this.units.get(unit) ?? this.all;
    const ms = e ? e.srtt + 4 * e.rttvar : this.initial;
    return Math.min(this.max, Math.max(this.min, ms));
  }
}

function update(e: Estimate | undefined, ms: number): Estimate {
  if (!e) return { srtt: ms, rttvar: ms / 2 };
  const rttvar = 0.75 * e.rttvar + 0.25 * Math.abs(e.srtt - ms);
  return { srtt: 0.875 * e.srtt + 0.125 * ms, rttvar };
}
